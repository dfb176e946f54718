"""Signing: API-key and signing-secret material, and the X-E2A-Auth-* identity signature."""
