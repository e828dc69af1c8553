"""The HTTP store service (`netpol-gen serve`), its client, wire format and authentication, and the learning
source (local store or server) readers use.
"""
