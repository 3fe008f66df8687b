"""What `market-pipeline demo` runs by default (light: its parser's help names them)."""

DEMO_INSTRUMENTS = ("BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP")
DEMO_DAYS = 3  # ending yesterday by default: the last complete days, which the UI's default windows show
