"""Review of a policy change: the diff of two sets with its impact on recorded traffic, and its renderers (one
module per format).
"""
