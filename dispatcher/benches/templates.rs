//! Rendering a typical template for one recipient (SPEC §8): what each templated
//! delivery costs on top of an untemplated one. Target: ≤ 20 µs median.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use herald_dispatcher::stages::templates::{Compiled, Recipient};

fn spec() -> herald_common::api::TemplateSpec {
    serde_json::from_value(serde_json::json!({
        "default_locale": "en",
        "locales": {
            "en": {
                "title": "Order {{ order_id }} shipped",
                "body": "Hi {{ name }}, your {{ items | length }} {{ items | length | plural(one='item', other='items') }} ship {{ shipped_at | date }}.",
                "email": {
                    "subject": "Order {{ order_id }} shipped",
                    "html": "<p>Hi {{ name }},</p><ul>{% for i in items %}<li>{{ i.name }} × {{ i.qty }} — {{ i.price | currency('EUR') }}</li>{% endfor %}</ul><p>Total {{ total | currency('EUR') }}</p>"
                },
                "sms": {"text": "Order {{ order_id }} shipped: {{ items | length }} items, {{ total | currency('EUR') }}"}
            },
            "zh": {"title": "订单 {{ order_id }} 已发货", "body": "{{ name }}，您的订单已发货。"}
        }
    }))
    .expect("spec")
}

fn vars() -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "order_id": "A-1042", "name": "Ada Lovelace", "shipped_at": "2026-12-24T09:00:00Z",
        "total": 129.5,
        "items": [{"name": "Notebook", "qty": 2, "price": 12.5}, {"name": "Pen", "qty": 4, "price": 3.0},
                  {"name": "Lamp", "qty": 1, "price": 92.5}]
    });
    v.as_object().cloned().unwrap_or_default()
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
