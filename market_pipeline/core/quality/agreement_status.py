"""The `status` of a `source_agreement` day row that was compared, and how: apart from the
comparison itself so the CLI's run summary can name them without importing the book kernels."""

UPDATE_ID, EXCHANGE_TIME = "update_id", "exchange_time"
MATCHINGS = (UPDATE_ID, EXCHANGE_TIME)
# Asked to match by update id, but the two sources' messages share no id: matched by exchange time.
NO_COMMON_IDS = "no_common_ids"
# The statuses of a compared instrument-day (a day row with figures).
COMPARED = (*MATCHINGS, NO_COMMON_IDS)
