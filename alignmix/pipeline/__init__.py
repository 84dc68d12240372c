"""Rows, readers and format adapters, the stage contract, the shard store, recipes and mixing.

Imports no other alignmix package: everything else builds on this one.
"""
