// The row of position j in a KV cache of `rows` rows that pins positions [0, sinks) to rows 0..sinks and cycles
// later positions through the remaining rows (a ring; with no window the ring is as long as the context).
fn ring_row(j: u32, sinks: u32, rows: u32) -> u32 {
    if (j < sinks) {
        return j;
    }
    return sinks + (j - sinks) % (rows - sinks);
}
