"""Collect responses from real backends, score them with an LLM judge, measure agreement with
human labels, and close the loop from gateway traffic to a retrained, reloaded router.

Imports: data, costs, serve (config, upstream), evaluation and features; never the CLI or
the report.
"""
