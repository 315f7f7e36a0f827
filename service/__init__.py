"""Async LLM chat streaming service."""
