"""Operations: structured logging with secret redaction, `clara doctor` / `clara health`,
backups, JSON Lines export/import, the mem0 importer and the load benchmark."""
