"""Metrics, declared once with help text; drivers update them."""
