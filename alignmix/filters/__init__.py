"""Curation filters: each one a stage (kept, rejected, stats) that explains every drop."""
