//! Variants named in configuration (`AUTHZ_FORWARD_AUTH=ingress-nginx`,
//! `AUTHZ_CREDENTIALS=cookie,bearer`): one table per enum, read case-insensitively, written back
//! as the table says.

/// The variant `raw` names in `table`, case-insensitively; the error lists every name.
pub fn parse<T: Copy>(table: &[(&'static str, T)], raw: &str) -> Result<T, String> {
    table
        .iter()
        .find(|(name, _)| raw.eq_ignore_ascii_case(name))
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            format!("{raw:?} is not one of {}", names.join(", "))
        })
}

/// The name of `value` in `table` (every variant has one: `""` is never returned for a table
/// that lists them all).
pub fn name_of<T: PartialEq>(table: &[(&'static str, T)], value: &T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| v == value)
        .map_or("", |(name, _)| name)
}
