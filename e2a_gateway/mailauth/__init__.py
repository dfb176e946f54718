"""Sender authentication (SPF, DKIM, DMARC) and the DNS resolver every lookup goes through."""
