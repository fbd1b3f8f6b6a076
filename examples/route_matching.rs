//! What route matching costs as the policy grows: `RouteTable::demand` for one request against
//! tables of 5, 50 and 200 routes (every route a realistic prefix, half of them under a shared
//! `/api/` prefix, some with placeholders), the request matching the last route or none.
//! The trie makes the cost depend on the path's depth, not on the number of routes.
//!
//!     cargo run --release --example route_matching
//!
//! Figures go to BENCHMARKS.md ("Route matching").

use std::hint::black_box;
use std::time::Instant;

use better_authz::path::NormalPath;
use better_authz::routes::{NamedRoute, RouteTable, file};

fn table(n: usize) -> RouteTable {
    let mut yaml = String::from("routes:\n");
    for i in 0..n {
        let path = match i % 4 {
            0 => format!("/area{i}/"),
            1 => format!("/api/area{i}/"),
            2 => format!("/api/orgs{i}/{{org_id}}/tasks/"),
            _ => format!("/api/users{i}/{{user_id}}/"),
        };
        let require = match i % 4 {
            2 => "require: { org_roles: [owner] }",
            _ => "require: { roles: [admin] }",
        };
        yaml.push_str(&format!(
            "  - name: r{i}\n    match: {{ path: \"{path}\", methods: [GET, POST] }}\n    {require}\n"
        ));
    }
    file::parse(&yaml).expect("a valid generated policy")
}

fn main() {
    const ROUNDS: u32 = 200_000;
    println!("| routes | request | ns per match |");
    println!("|---:|---|---:|");
    for n in [5usize, 50, 200] {
        let routes = table(n);
        let last = n - 1;
        let hit = match last % 4 {
            0 => format!("/area{last}/x"),
            1 => format!("/api/area{last}/x"),
            2 => format!("/api/orgs{last}/acme/tasks/1"),
            _ => format!("/api/users{last}/u1/x"),
        };
        for (label, raw) in [
            ("last route", hit.as_str()),
            ("no route", "/api/none/of/these"),
        ] {
            let path = NormalPath::parse(raw).expect("a usable path");
            let start = Instant::now();
            for _ in 0..ROUNDS {
                black_box(routes.demand(
                    black_box(&path),
                    "GET",
                    Some("app.example"),
                    NamedRoute::None,
                ));
            }
            let ns = start.elapsed().as_nanos() / u128::from(ROUNDS);
            println!("| {n} | {label} (`{raw}`) | {ns} |");
        }
    }
}
