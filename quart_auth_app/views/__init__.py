"""Blueprints: HTML pages, the account page, and the JSON API."""
