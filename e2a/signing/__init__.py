"""Signing: API key and signing-secret material, and (later) X-E2A-Auth-* signatures."""
