"""SMTP for e2a: the sans-IO server session, its trio listener and (later) outbound delivery."""
