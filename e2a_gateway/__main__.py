"""`python -m e2a_gateway` is the `e2a` command (and the one-file executable's entry point)."""

try:
    import multiprocessing

    from e2a_gateway.cli.main import main
    from e2a_gateway.launcher import die_with_launcher
except KeyboardInterrupt:  # Ctrl-C while the command loads: EXIT_INTERRUPTED, as main() ends
    raise SystemExit(130) from None
except RuntimeError as error:  # the same Ctrl-C met a class being built (`main.interrupted`)
    if not isinstance(error.__cause__, KeyboardInterrupt):
        raise
    raise SystemExit(130) from None

if __name__ == "__main__":
    # SMTP acceptor processes (smtp.processes) are spawned: in the one-file executable the
    # spawned process must run the acceptor, not the command line.
    multiprocessing.freeze_support()
    die_with_launcher()
    raise SystemExit(main())
