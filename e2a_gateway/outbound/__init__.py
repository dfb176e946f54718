"""Outbound mail: building messages, the approval state machine, handing off to SMTP."""
