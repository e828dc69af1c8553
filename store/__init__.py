"""Persistence: the SQLAlchemy schema, writes of aggregated edges and batches, and the queries that read them
back (SQLite or PostgreSQL).
"""
