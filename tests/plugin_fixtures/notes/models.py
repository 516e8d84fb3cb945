from sqlalchemy import Column, Integer, MetaData, String, Table, Text

metadata = MetaData()
notes = Table(
    "notes_notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner_id", String(200), nullable=False, index=True),
    Column("text", Text, nullable=False),
)
