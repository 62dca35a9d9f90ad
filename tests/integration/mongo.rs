//! MongoDB targets against a real MongoDB-wire server (secantusdb, started by `cargo xtask
//! test`): scripts and mongosh-style queries through the sandbox, Extended JSON round trips,
//! read requests that cannot write, write requests that commit all or nothing.

use mongodb::bson::{Bson, doc, oid::ObjectId};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{
    Actor, FIRST_ORDER, StoreKind, TestApp, mongo_instance, mongo_target, shown_rows,
};
use crate::scripts::{kind, run_request};

#[tokio::test]
async fn the_instance_answers_a_connection_test_and_lists_its_databases() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = mongo_target().await;
    let instance = mongo_instance(&app, "manual").await;
    let admin = app.login(Actor::Admin).await;
    let (status, t) = app
        .post(
            &format!("/api/v1/instances/{instance}/test"),
            &admin.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(t.to_string().contains("MongoDB"), "{t}");
    let (status, dbs) = app
        .get(
            &format!("/api/v1/instances/{instance}/databases"),
            &admin.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dbs}");
    let names = dbs.to_string();
    assert!(names.contains(&target.name), "{dbs}");
    assert!(
        !names.contains("\"admin\"") && !names.contains("\"local\""),
        "{dbs}"
    );
}

#[tokio::test]
async fn a_read_script_queries_with_mongosh_methods_and_typed_values() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = mongo_target().await;
    let instance = mongo_instance(&app, "on_approval").await;
    let script = format!(
        r#"const n = await db.collection('orders').countDocuments({{ status: 'open' }});
const open = await db.orders.find({{ status: 'open' }}, {{ sort: {{ qty: -1 }} }}).toArray();
const one = await db.orders.findOne({{ _id: ObjectId('{FIRST_ORDER}') }});
const groups = await db.orders.aggregate([{{ $group: {{ _id: '$status', q: {{ $sum: '$qty' }} }} }}]).sort({{ _id: 1 }}).toArray();
const page = await db.orders.find({{}}).sort({{ qty: 1 }}).skip(1).limit(1).project({{ _id: 0, qty: 1 }}).toArray();
console.log('open', n);
return {{
  n, first: open[0].qty, id: one._id.toHexString(), isOid: one._id instanceof ObjectId,
  total: one.total.toString(), big: one.big.toString(), placed: one.placed.toISOString(),
  isDate: one.placed instanceof Date, blob: one.blob.toString(),
  statuses: (await db.orders.distinct('status')).sort(), groups, page,
  estimated: await db.orders.estimatedDocumentCount(),
  missing: await db.orders.findOne({{ status: 'lost' }}),
}};"#
    );
    let e = run_request(&app, &instance, &target.name, ("script", "read"), &script).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let r = &e["result"];
    assert_eq!(r["n"], 2, "{e}");
    assert_eq!(r["first"], 3);
    assert_eq!(r["id"], FIRST_ORDER);
    assert_eq!(r["isOid"], true);
    assert_eq!(r["total"], "19.99");
    assert_eq!(r["big"], "9007199254740993", "a Long stays exact");
    assert_eq!(r["placed"], "2023-11-14T22:13:20.000Z");
    assert_eq!(r["isDate"], true);
    assert_eq!(r["blob"], "AQID");
    assert_eq!(r["statuses"], json!(["closed", "open"]));
    assert_eq!(
        r["groups"],
        json!([{"_id": "closed", "q": 5}, {"_id": "open", "q": 4}])
    );
    assert_eq!(r["page"], json!([{"qty": 3}]));
    assert_eq!(r["estimated"], 3);
    assert_eq!(r["missing"], json!(null));
    assert_eq!(e["logs"][0]["message"], "open 2");
    let calls = e["calls"].as_array().expect("calls");
    let ops: Vec<&str> = calls.iter().filter_map(|c| c["op"].as_str()).collect();
    assert_eq!(
        ops,
        [
            "countDocuments",
            "find",
            "findOne",
            "aggregate",
            "find",
            "distinct",
            "estimatedDocumentCount",
            "findOne"
        ]
    );
    assert_eq!(calls[1]["target"], "orders");
    assert_eq!(calls[1]["rows"], 2);
}

#[tokio::test]
async fn a_mongosh_query_request_shows_its_documents_as_rows() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = mongo_target().await;
    let instance = mongo_instance(&app, "on_approval").await;
    let query = r#"db.orders.find({ status: "open" }).sort({ qty: -1 })"#;
    let e = run_request(&app, &instance, &target.name, ("query", "read"), query).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    let rows = shown_rows(&app, &e).await;
    let names: Vec<&str> = rows["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names[..3], ["_id", "status", "qty"], "{rows}");
    // Extended JSON shown as plain values: the ObjectId as its hex, the decimal as text.
    assert_eq!(rows["rows"][0][0], FIRST_ORDER, "{rows}");
    assert_eq!(rows["rows"][0][2], 3, "{rows}");
    let total = names.iter().position(|n| *n == "total").expect("total");
    assert_eq!(rows["rows"][0][total], "19.99", "{rows}");
    assert_eq!(rows["rows"].as_array().map(Vec::len), Some(2));

    let e = run_request(
        &app,
        &instance,
        &target.name,
        ("query", "read"),
        "db.orders.countDocuments({})",
    )
    .await;
    assert_eq!(
        (e["status"].as_str(), &e["result"]),
        (Some("succeeded"), &json!(3)),
        "{e}"
    );
}

#[tokio::test]
async fn a_read_request_cannot_write_by_any_path() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = mongo_target().await;
    let instance = mongo_instance(&app, "on_approval").await;
    let attempts = [
        ("db.orders.insertOne({ x: 1 })", "read_only_violation"),
        ("db.orders.insertMany([{ x: 1 }])", "read_only_violation"),
        (
            "db.orders.updateOne({}, { $set: { status: 'x' } })",
            "read_only_violation",
        ),
        (
            "db.orders.updateMany({}, { $set: { status: 'x' } })",
            "read_only_violation",
        ),
        (
            "db.orders.replaceOne({}, { status: 'x' })",
            "read_only_violation",
        ),
        ("db.orders.deleteOne({})", "read_only_violation"),
        ("db.orders.deleteMany({})", "read_only_violation"),
        (
            "db.orders.aggregate([{ $match: {} }, { $out: 'copy' }]).toArray()",
            "read_only_violation",
        ),
        (
            "db.orders.aggregate([{ $merge: { into: 'copy' } }]).toArray()",
            "read_only_violation",
        ),
        (
            "db.orders.find({ $where: 'this.qty > 1' }).toArray()",
            "forbidden_statement",
        ),
        (
            "db.orders.aggregate([{ $match: { $expr: { $function: { body: 'function() { return true }', args: [], lang: 'js' } } } }]).toArray()",
            "forbidden_statement",
        ),
    ];
    for (call, expected) in attempts {
        // A refused call ends the script even when the script catches it.
        let script = format!("try {{ await {call}; }} catch (e) {{}}\nreturn 'survived';");
        let e = run_request(&app, &instance, &target.name, ("script", "read"), &script).await;
        assert_eq!(
            (e["status"].as_str(), kind(&e)),
            (Some("failed"), expected),
            "{call}: {e}"
        );
        assert_eq!(e["result"], json!(null), "{call}: {e}");
    }
    assert_eq!(target.count("orders", doc! {}).await, 3);
    assert_eq!(target.count("orders", doc! {"status": "x"}).await, 0);
    assert_eq!(target.collections().await, ["orders"]);
}

#[tokio::test]
async fn a_write_script_commits_all_or_nothing_and_values_round_trip() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = mongo_target().await;
    let instance = mongo_instance(&app, "on_approval").await;

    // Fails after two writes: neither stays.
    let failing = "await db.orders.insertOne({ status: 'new' });\nawait db.orders.updateMany({ status: 'open' }, { $set: { status: 'closed' } });\nthrow new Error('changed my mind');";
    let e = run_request(&app, &instance, &target.name, ("script", "write"), failing).await;
    assert_eq!(
        (e["status"].as_str(), kind(&e)),
        (Some("failed"), "script"),
        "{e}"
    );
    assert_eq!(e["error"]["line"], 3, "{e}");
    assert_eq!(target.count("orders", doc! {}).await, 3);
    assert_eq!(target.count("orders", doc! {"status": "open"}).await, 2);

    // A failed call the script caught still keeps the transaction from committing.
    let caught = format!(
        "await db.orders.deleteMany({{ status: 'closed' }});\ntry {{ await db.orders.insertOne({{ _id: ObjectId('{FIRST_ORDER}') }}); }} catch (e) {{ console.log(e.code); }}\nreturn 'done';"
    );
    let e = run_request(&app, &instance, &target.name, ("script", "write"), &caught).await;
    assert_eq!(
        (e["status"].as_str(), kind(&e)),
        (Some("failed"), "db_error"),
        "{e}"
    );
    assert_eq!(target.count("orders", doc! {"status": "closed"}).await, 1);
    assert_eq!(
        e["calls"][1]["error"]
            .as_str()
            .map(|m| m.contains("uplicate")),
        Some(true),
        "{e}"
    );

    // Succeeds: every write commits, and typed values arrive as their BSON types.
    let ok = "const r = await db.orders.updateMany({ status: 'open' }, { $set: { status: 'shipped' } });\nconst ins = await db.orders.insertOne({ _id: ObjectId('65a0000000000000000000ff'), at: ISODate('2024-05-01T10:00:00Z'), n: NumberLong('9007199254740993'), price: NumberDecimal('0.10'), raw: BinData(0, 'AQID'), small: 7, ratio: 0.5, tags: ['a'] });\nconst many = await db.orders.insertMany([{ k: 1 }, { k: 2 }]);\nconst del = await db.orders.deleteOne({ k: 2 });\nconst rep = await db.orders.replaceOne({ k: 1 }, { k: 10 }, { upsert: false });\nreturn { modified: r.modifiedCount, matched: r.matchedCount, inserted: ins.insertedId.toHexString(), many: many.insertedCount, deleted: del.deletedCount, replaced: rep.modifiedCount };";
    let e = run_request(&app, &instance, &target.name, ("script", "write"), ok).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        e["result"],
        json!({"modified": 2, "matched": 2, "inserted": "65a0000000000000000000ff", "many": 2, "deleted": 1, "replaced": 1})
    );
    assert_eq!(target.count("orders", doc! {"status": "shipped"}).await, 2);
    assert_eq!(target.count("orders", doc! {"k": 10}).await, 1);
    let stored = target
        .db
        .collection::<mongodb::bson::Document>("orders")
        .find_one(doc! {"_id": ObjectId::parse_str("65a0000000000000000000ff").expect("oid")})
        .await
        .expect("find")
        .expect("inserted document");
    assert!(
        matches!(stored.get("at"), Some(Bson::DateTime(d)) if d.timestamp_millis() == 1_714_557_600_000),
        "{stored}"
    );
    assert_eq!(stored.get("n"), Some(&Bson::Int64(9_007_199_254_740_993)));
    assert!(
        matches!(stored.get("price"), Some(Bson::Decimal128(d)) if d.to_string() == "0.10"),
        "{stored}"
    );
    assert!(
        matches!(stored.get("raw"), Some(Bson::Binary(b)) if b.bytes == [1, 2, 3]),
        "{stored}"
    );
    assert_eq!(stored.get("small"), Some(&Bson::Int32(7)));
    assert_eq!(stored.get("ratio"), Some(&Bson::Double(0.5)));
}

#[tokio::test]
async fn bad_calls_are_clear_errors_the_script_can_catch() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = mongo_target().await;
    let instance = mongo_instance(&app, "on_approval").await;
    let script = r"const errors = [];
for (const f of [
  () => db.orders.find({}, { limt: 5 }).toArray(),
  () => db.orders.find({ _id: { $oid: 'zz' } }).toArray(),
  () => db.collection('system.users').findOne({}),
  () => db.orders.distinct(5),
  () => db.query('SELECT 1'),
]) { try { await f(); errors.push('no error'); } catch (e) { errors.push(e.message); } }
return errors;";
    let e = run_request(&app, &instance, &target.name, ("script", "read"), script).await;
    // A failed call in a read request is only reported; there is nothing to commit.
    assert_eq!(e["status"], "succeeded", "{e}");
    let errors = e["result"].as_array().expect("errors");
    let expect = [
        "unknown option \"limt\"",
        "is not valid",
        "is not a collection a request may use",
        "the field name must be a string",
        "not a function",
    ];
    assert_eq!(errors.len(), expect.len(), "{e}");
    for (got, want) in errors.iter().zip(expect) {
        assert!(
            got.as_str().is_some_and(|g| g.contains(want)),
            "{got} should say {want}: {e}"
        );
    }
}

#[tokio::test]
async fn reads_past_the_row_limit_are_cut_and_the_logs_say_so() {
    let app = TestApp::spawn_with(StoreKind::Sqlite, "[limits]\nmax_rows = 2").await;
    let target = mongo_target().await;
    let instance = mongo_instance(&app, "on_approval").await;
    let cases = [
        (
            instance.as_str(),
            target.name.as_str(),
            "return (await db.orders.find({}).toArray()).length;",
            "find orders",
        ),
        // Under the limit: nothing is cut and nothing is said.
        (
            instance.as_str(),
            target.name.as_str(),
            "return (await db.orders.find({}).limit(2).toArray()).length;",
            "",
        ),
    ];
    let shop = app.shop_id().await;
    let sql = [(
        shop.as_str(),
        "main",
        "return (await db.query('SELECT id FROM customers')).rows.length;",
        "query SELECT id",
    )];
    for (instance, database, script, warned) in cases.into_iter().chain(sql) {
        let e = run_request(&app, instance, database, ("script", "read"), script).await;
        assert_eq!(
            (e["status"].as_str(), &e["result"]),
            (Some("succeeded"), &json!(2)),
            "{script}: {e}"
        );
        let warnings: Vec<&str> = e["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .filter(|l| l["level"] == "warn")
            .filter_map(|l| l["message"].as_str())
            .collect();
        if warned.is_empty() {
            assert!(warnings.is_empty(), "{script}: {e}");
        } else {
            assert_eq!(warnings.len(), 1, "{script}: {e}");
            assert!(
                warnings[0].contains(warned) && warnings[0].contains("first 2 rows"),
                "{script}: {e}"
            );
        }
    }
}

/// A standalone server (no replica set) runs no transactions: each write stands on its own,
/// a failure keeps what was written before it, and the execution says so first in its logs.
#[tokio::test]
async fn on_a_standalone_server_writes_are_not_atomic_and_the_outcome_says_so() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let url = crate::harness::mongo_standalone_url();
    let target = crate::harness::mongo_target_at(&url).await;
    let instance = crate::harness::mongo_instance_at(&app, "on_approval", &url).await;
    let warning = |e: &serde_json::Value| {
        e["logs"][0]["level"] == "warn"
            && e["logs"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("runs no transactions"))
    };

    let failing =
        "await db.orders.insertOne({ status: 'new' });\nthrow new Error('changed my mind');";
    let e = run_request(&app, &instance, &target.name, ("script", "write"), failing).await;
    assert_eq!(
        (e["status"].as_str(), kind(&e)),
        (Some("failed"), "script"),
        "{e}"
    );
    assert!(warning(&e), "{e}");
    assert_eq!(
        target.count("orders", doc! {"status": "new"}).await,
        1,
        "the write before the failure stayed"
    );

    let ok = "const r = await db.orders.updateMany({ status: 'open' }, { $set: { status: 'shipped' } });\nreturn r.modifiedCount;";
    let e = run_request(&app, &instance, &target.name, ("script", "write"), ok).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["result"], 2);
    assert!(warning(&e), "{e}");

    // Reads carry no such warning: there is nothing to keep atomic.
    let read = "return await db.orders.countDocuments({});";
    let e = run_request(&app, &instance, &target.name, ("script", "read"), read).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert!(!warning(&e), "{e}");
}

/// The server's connection ids of clients named `app_name` (from `currentOp`).
async fn connections_of(target: &crate::harness::MongoTarget, app_name: &str) -> Vec<i64> {
    let out = target
        .db
        .client()
        .database("admin")
        .run_command(doc! {"currentOp": 1})
        .await
        .expect("currentOp");
    let mut ids: Vec<i64> = out
        .get_array("inprog")
        .expect("inprog")
        .iter()
        .filter_map(Bson::as_document)
        .filter(|op| {
            op.get_document("clientMetadata")
                .and_then(|m| m.get_document("application"))
                .and_then(|a| a.get_str("name"))
                == Ok(app_name)
        })
        .filter_map(|op| op.get_i64("connectionId").ok())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn executions_on_one_instance_share_a_kept_client() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = mongo_target().await;
    let instance = mongo_instance(&app, "on_approval").await;
    let app_name = format!("quorum:exec:{instance}");
    let script = "return await db.orders.countDocuments({});";
    let e = run_request(&app, &instance, &target.name, ("script", "read"), script).await;
    assert_eq!(
        (e["status"].as_str(), &e["result"]),
        (Some("succeeded"), &json!(3)),
        "{e}"
    );
    let after_one = connections_of(&target, &app_name).await;
    assert!(!after_one.is_empty(), "the execution's client is kept open");
    for _ in 0..3 {
        let e = run_request(&app, &instance, &target.name, ("script", "read"), script).await;
        assert_eq!(e["status"], "succeeded", "{e}");
    }
    // The later executions connected nothing new: they used the first one's client.
    let after_four = connections_of(&target, &app_name).await;
    assert!(
        after_four.iter().all(|id| after_one.contains(id)),
        "{after_one:?} then {after_four:?}"
    );
}
