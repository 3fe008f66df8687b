"""Raw lake domain: vendor tables imported as they are, schema-checked, per UTC day."""
