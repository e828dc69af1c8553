"""The node agent: live capture on pod interfaces, the Kubernetes API view over time, spooling and delivery of
per-interval batches.
"""
