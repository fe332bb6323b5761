"""Greeness benchmark library."""
