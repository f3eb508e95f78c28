"""Reading sources into validated contract tables: files, PostgreSQL, partitions, rejects."""
