"""What every exchange's live capture shares: the WebSocket connection (`stream`), the hourly gzip
(optionally encrypted) files (`writer`), their SHA-256 manifest with the recorded gaps
(`manifest`), the TLS policy and reconnect backoff (`connection`), and the recorder of exchanges
whose book channel starts with a snapshot on subscribing (`subscribed`: Kraken, OKX, Bybit).
Binance's recorder, which joins a REST snapshot to buffered diffs, is `vendors/binance/live/`."""
