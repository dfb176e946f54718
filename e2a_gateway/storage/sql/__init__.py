"""The SQL of e2a's storage, written once per aggregate for both backends.

Each module holds one aggregate's statements as methods of a mixin over `Runner`; `SqlStorage`
joins them into the whole `Storage`. The few places where SQLite and PostgreSQL spell SQL
differently are asked of a `Dialect`; connections, transactions and threads are the backends'.
"""
