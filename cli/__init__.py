"""The command line: each command parses options, calls one library function, prints its result and maps errors
to exit codes.
"""
