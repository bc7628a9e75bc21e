-- OHLC bars per instrument and interval, folded from TradeExecuted in the recording
-- transaction (and by replay). Hashed: a bar's time is its trades' journal time
-- (envelope occurred_at), never the clock at folding. Volume and notional are numeric:
-- their sums over a bar may pass int64 although each trade's product cannot.
CREATE TABLE IF NOT EXISTS bars (
    instrument_id text    NOT NULL,
    interval      text    NOT NULL,  -- 1m | 1h | 1d
    start_s       bigint  NOT NULL,  -- the bar's start, seconds since the epoch (UTC)
    open          bigint  NOT NULL,  -- price of the bar's first trade in journal order
    high          bigint  NOT NULL,
    low           bigint  NOT NULL,
    close         bigint  NOT NULL,  -- price of its last trade in journal order
    volume        numeric NOT NULL,  -- tonnes
    notional      numeric NOT NULL,  -- sum of price x quantity: VWAP = notional / volume
    trades        bigint  NOT NULL,
    PRIMARY KEY (instrument_id, interval, start_s)
);
