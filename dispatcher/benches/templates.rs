//! Rendering a typical template for one recipient (SPEC §8): what each templated
//! delivery costs on top of an untemplated one. Target: ≤ 20 µs median.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use herald_dispatcher::stages::templates::{Compiled, Recipient};

/// The template and variables `herald-bench logic` sends too.
const FIXTURE: &str = include_str!("../../tests/fixtures/template-order-shipped.json");

fn fixture(part: &str) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_str(FIXTURE).expect("the fixture is JSON");
    all[part].clone()
}

fn spec() -> herald_common::api::TemplateSpec {
    serde_json::from_value(fixture("template")).expect("spec")
}

fn vars() -> serde_json::Map<String, serde_json::Value> {
    fixture("vars").as_object().cloned().unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let compiled = Compiled::compile("order_shipped", 1, &spec(), false).expect("compiles");
    let vars = vars();
    let to = Recipient {
        user_id: "u-1",
        timezone: "Europe/Paris",
    };
    c.bench_function("render a typical template (5 parts, en)", |b| {
        b.iter(|| black_box(compiled.render(black_box("en"), black_box(&vars), &to)))
    });
    c.bench_function("render what an in-app delivery reads (title, body)", |b| {
        b.iter(|| {
            black_box(compiled.render_for(
                black_box("en"),
                black_box(&vars),
                &to,
                &[herald_common::api::ChannelKind::InApp],
            ))
        })
    });
    c.bench_function("pick locale zh-Hant-TW with fallback", |b| {
        b.iter(|| black_box(compiled.pick_locale(black_box(&[Some("zh-Hant-TW"), None]))))
    });
    c.bench_function("compile the template (once per version per process)", |b| {
        b.iter(|| black_box(Compiled::compile("order_shipped", 1, &spec(), false).is_ok()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
