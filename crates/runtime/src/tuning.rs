//! Kernel sizes found by [`ternlight_gpu::tune`], cached per adapter so that later runs on the same device start
//! with them: natively `<cache dir>/tuning/<adapter>.json` (written by `ternlight tune`; `TERNLIGHT_TUNING=default`
//! ignores it), in the browser a record in Cache Storage (written by `tuneDevice`).

use ternlight_gpu::device::DeviceInfo;
use ternlight_gpu::kernels::Tuning;
use ternlight_gpu::tune::Trial;
#[cfg(not(target_arch = "wasm32"))]
use {crate::http::cache_dir, std::path::PathBuf, ternlight_gpu::Gpu};

/// The adapter `info` describes as a name safe for files and storage keys: its name, backend and type.
pub fn adapter_key(info: &DeviceInfo) -> String {
    let key = format!("{}-{}-{}", info.name, info.backend, info.device_type);
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// The cache file of the adapter `info` describes.
#[cfg(not(target_arch = "wasm32"))]
pub fn cache_path(info: &DeviceInfo) -> PathBuf {
    cache_dir().join("tuning").join(format!("{}.json", adapter_key(info)))
}

/// `tuning` as the cache's JSON.
pub fn to_json(tuning: &Tuning) -> serde_json::Value {
    let Tuning {
        wg,
        tm,
        tn,
        wg_x,
        wg_y,
        broadcast,
        nr,
        rpl,
        rpl_row_bytes,
        rpl_bytes,
        vw,
        ternary_wg,
        ternary_nr,
        ternary_rows,
        ternary_swar,
        attn_kv_tile,
        attn_splits,
        attn_split_from,
    } = tuning;
    serde_json::json!({
        "wg": wg, "tm": tm, "tn": tn, "wg_x": wg_x, "wg_y": wg_y, "broadcast": broadcast, "nr": nr, "rpl": rpl,
        "vw": vw,
        "rpl_row_bytes": rpl_row_bytes, "rpl_bytes": rpl_bytes, "ternary_wg": ternary_wg, "ternary_nr": ternary_nr,
        "ternary_rows": ternary_rows, "ternary_swar": ternary_swar, "attn_kv_tile": attn_kv_tile,
        "attn_splits": attn_splits, "attn_split_from": attn_split_from
    })
}

/// An autotune run's trials as JSON: `[{kernel: matvec | matmul | ternary_matvec | decode_attention | split_from,
/// tuning, ms}]`, for `ternlight tune` and the browser's `tuneDevice`.
pub fn trials_json(trials: &[Trial]) -> serde_json::Value {
    let rows = trials
        .iter()
        .map(|t| serde_json::json!({ "kernel": t.kernel.name(), "tuning": to_json(&t.tuning), "ms": t.seconds * 1e3 }));
    serde_json::Value::Array(rows.collect())
}

/// The tuning in `json`, or `None` when a field is missing or out of range (a stale or damaged cache).
pub fn from_json(json: &serde_json::Value) -> Option<Tuning> {
    let field = |name: &str| json.get(name)?.as_u64().and_then(|v| u32::try_from(v).ok());
    let flag = |name: &str| json.get(name)?.as_bool();
    let t = Tuning {
        wg: field("wg")?,
        tm: field("tm")?,
        tn: field("tn")?,
        wg_x: field("wg_x")?,
        wg_y: field("wg_y")?,
        broadcast: flag("broadcast")?,
        nr: field("nr")?,
        rpl: field("rpl")?,
        rpl_row_bytes: field("rpl_row_bytes")?,
        rpl_bytes: field("rpl_bytes")?,
        vw: field("vw")?,
        ternary_wg: field("ternary_wg")?,
        ternary_nr: field("ternary_nr")?,
        ternary_rows: flag("ternary_rows")?,
        ternary_swar: flag("ternary_swar")?,
        attn_kv_tile: field("attn_kv_tile")?,
        attn_splits: field("attn_splits")?,
        attn_split_from: field("attn_split_from")?,
    };
    let sane = [t.wg, t.ternary_wg].iter().all(|&wg| wg.is_power_of_two() && wg <= 1024)
        && [t.tm, t.tn, t.nr, t.ternary_nr].iter().all(|&v| (1..=16).contains(&v))
        && t.vw <= 8
        && t.rpl <= 16
        && (t.ternary_rows || t.ternary_nr <= t.ternary_wg);
    let workgroup = t.wg_x * t.wg_y;
    (sane && (1..=1024).contains(&workgroup) && t.attn_kv_tile <= 256 && (1..=256).contains(&t.attn_splits))
        .then_some(t)
}

/// Writes `tuning` as the cached one of `gpu`'s adapter; returns the file.
#[cfg(not(target_arch = "wasm32"))]
pub fn save(gpu: &Gpu, tuning: &Tuning) -> std::io::Result<PathBuf> {
    let path = cache_path(&gpu.info);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&to_json(tuning))?)?;
    Ok(path)
}

/// Gives `gpu` its adapter's cached tuning, if there is a valid one and `TERNLIGHT_TUNING` is not `default`;
/// returns whether it did.
#[cfg(not(target_arch = "wasm32"))]
pub fn apply_cached(gpu: &mut Gpu) -> bool {
    if std::env::var("TERNLIGHT_TUNING").is_ok_and(|v| v == "default") {
        return false;
    }
    let cached = std::fs::read(cache_path(&gpu.info)).ok().and_then(|b| serde_json::from_slice(&b).ok());
    match cached.as_ref().and_then(from_json) {
        Some(t) => {
            gpu.tuning = t;
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunings_round_trip_and_damaged_ones_are_refused() {
        let t = Tuning {
            wg: 128,
            nr: 8,
            rpl: 2,
            rpl_row_bytes: 1280,
            rpl_bytes: 8192,
            tm: 2,
            tn: 4,
            wg_x: 16,
            wg_y: 8,
            broadcast: true,
            vw: 2,
            ternary_wg: 16,
            ternary_nr: 8,
            ternary_rows: true,
            ternary_swar: true,
            attn_kv_tile: 32,
            attn_splits: 8,
            attn_split_from: 512,
        };
        assert_eq!(from_json(&to_json(&t)), Some(t.clone()));
        let mut odd = to_json(&t);
        odd["wg"] = serde_json::json!(100);
        assert_eq!(from_json(&odd), None);
        // The float matrix-vector kernels store several outputs per invocation where a workgroup has more.
        let mut wide = to_json(&t);
        wide["wg"] = serde_json::json!(4);
        assert!(from_json(&wide).is_some());
        // The integer one split over lanes does not; whole rows per invocation take any number of them.
        let mut wide_ternary = to_json(&t);
        wide_ternary["ternary_wg"] = serde_json::json!(4);
        assert!(from_json(&wide_ternary).is_some());
        wide_ternary["ternary_rows"] = serde_json::json!(false);
        assert_eq!(from_json(&wide_ternary), None);
        let mut numeric_flag = to_json(&t);
        numeric_flag["ternary_swar"] = serde_json::json!(1);
        assert_eq!(from_json(&numeric_flag), None);
        let mut deep = to_json(&t);
        deep["rpl"] = serde_json::json!(17);
        assert_eq!(from_json(&deep), None);
        let mut unsplit = to_json(&t);
        unsplit["attn_splits"] = serde_json::json!(0);
        assert_eq!(from_json(&unsplit), None);
        for field in ["nr", "broadcast"] {
            let mut missing = to_json(&t);
            missing.as_object_mut().unwrap().remove(field);
            assert_eq!(from_json(&missing), None, "{field}");
        }
        assert_eq!(from_json(&serde_json::json!({ "wg": -1 })), None);
    }
}
