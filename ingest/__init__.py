"""Ingestion: packets and flow records become attributed, aggregated edges (pcap/JSONL readers, attribution, the
offline import).
"""
