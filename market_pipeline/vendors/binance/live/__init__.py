"""Live capture of golden samples from Binance: WebSocket streams plus REST depth snapshots.

`recorder.record()` drives it; `stream` opens the WebSocket (the `websockets` library), `endpoints`
has the per-market URLs and TLS policy, `snapshot` the REST call, `sync` the diff-chain check,
`writer` the hourly gzip (optionally encrypted) files and `manifest` their SHA-256 manifest and
the recorded gaps.
"""
