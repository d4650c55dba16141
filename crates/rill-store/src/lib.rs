//! Chat and message storage on SQLite and PostgreSQL (sqlx), with embedded migrations.
