//! Slack: the outbox, messages in the request's thread, escaping and limits, retries, restarts,
//! dead letters, webhooks, and approving from Slack — against the local Slack stand-in.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Actor, StoreKind, TestApp};
use crate::slack_standin::{self, Fail, SIGNING_SECRET, SlackStandIn, TOKEN, form_body, sign};
use crate::store_tests;

const MAYA_SLACK: &str = "U0MAYA";
const DAN_SLACK: &str = "U0DAN";
const GINA_SLACK: &str = "U0GINA";
const STRANGER_SLACK: &str = "U0STRANGER";
const INJECTION: &str = "<!channel> <@U123> <https://evil.example|Approve> & more";

async fn slack_app(kind: StoreKind, slack: &SlackStandIn) -> TestApp {
    TestApp::spawn_with(kind, &bot_config(slack)).await
}

fn bot_config(slack: &SlackStandIn) -> String {
    format!(
        r##"
[slack]
bot_token = "{TOKEN}"
signing_secret = "{SIGNING_SECRET}"
default_channel = "#quorum"
api_base_url = "{}"
portal_url = "https://quorum.example.com"
"##,
        slack.api_base
    )
}

async fn standin() -> SlackStandIn {
    let slack = SlackStandIn::start().await;
    slack.add_user(MAYA_SLACK, "maya@example.com");
    slack.add_user(DAN_SLACK, "dan@example.com");
    slack.add_user(GINA_SLACK, "gina@example.com");
    slack.add_user(STRANGER_SLACK, "stranger@elsewhere.example");
    slack
}

/// Files a read query on demo-shop whose justification carries Slack control sequences.
async fn file(app: &TestApp, content: &str) -> Value {
    file_as(app, Actor::Developer, content).await
}

async fn file_as(app: &TestApp, who: Actor, content: &str) -> Value {
    let dan = app.login(who).await;
    let body = json!({
        "pod_id": app.pod_id("payments").await, "instance_id": app.shop_id().await, "database": "main",
        "kind": "query", "mode": "read", "content": content,
        "justification": format!("Ticket 4411 {INJECTION}"),
    });
    let (status, created) = app.post("/api/v1/requests", &dan.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn set_shop(app: &TestApp, patch: Value) {
    let admin = app.login(Actor::Admin).await;
    let shop = app.shop_id().await;
    let (status, body) = app
        .patch(&format!("/api/v1/instances/{shop}"), &admin.token, patch)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Posts a signed interaction; `age` shifts its timestamp into the past.
async fn interact(app: &TestApp, payload: &Value, secret: &str, age: i64) -> (StatusCode, String) {
    let body = form_body(payload);
    let ts = {
        use quorum_server::clock::Clock;
        app.clock.now().timestamp() - age
    };
    let r = app
        .client
        .post(app.url("/api/v1/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(secret, ts, &body))
        .body(body)
        .send()
        .await
        .expect("interaction");
    (r.status(), r.text().await.unwrap_or_default())
}

/// What Slack sends when `user` clicks `action` on the request's message.
fn click(root: &slack_standin::Message, user: &str, action: &str) -> Value {
    let button = root
        .blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == action)
        .unwrap_or_else(|| panic!("no {action} button in {}", root.blocks));
    json!({
        "type": "block_actions",
        "user": { "id": user },
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "channel": { "id": root.channel },
        "container": { "type": "message", "message_ts": root.ts, "channel_id": root.channel },
        "actions": [{ "action_id": action, "block_id": "review", "value": button["value"], "type": "button" }],
    })
}

async fn deliveries(app: &TestApp, query: &str) -> Value {
    let admin = app.login(Actor::Admin).await;
    let (status, page) = app
        .get(&format!("/api/v1/slack/deliveries{query}"), &admin.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page
}

async fn request(app: &TestApp, id: &str) -> Value {
    let dan = app.login(Actor::Developer).await;
    let (status, r) = app.get(&format!("/api/v1/requests/{id}"), &dan.token).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    r
}

/// Waits until no delivery is pending or being sent, and returns the outbox.
async fn settled(app: &TestApp) -> Value {
    for _ in 0..200 {
        let page = deliveries(app, "?per_page=100").await;
        let counts = &page["counts"];
        if counts.get("pending").is_none() && counts.get("sending").is_none() {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the outbox never emptied: {}",
        deliveries(app, "?per_page=100").await
    );
}

store_tests! {
    async fn full_flow_lands_in_the_thread_escaped_and_in_order(kind) {
        let slack = standin().await;
        let app = slack_app(kind, &slack).await;
        let r = file(&app, "SELECT id, email, name FROM customers ORDER BY id").await;
        let id = r["id"].as_str().expect("id").to_owned();

        let root = slack.wait_for("the request's message", |s| s.root_of(&id)).await;
        assert_eq!(root.channel, "C0PAYMENTS", "the POD's channel");
        let raw = root.blocks.to_string();
        assert!(raw.contains("&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil.example|Approve&gt; &amp; more"), "{raw}");
        assert!(!raw.contains("<!channel>") && !raw.contains("<@U123>") && !raw.contains("<https://evil"), "{raw}");
        assert!(raw.contains("\"approve\"") && raw.contains("\"reject\""), "buttons: {raw}");
        assert!(!root.text.contains("<!channel>"), "{}", root.text);

        // Maya approves from Slack; demo-shop runs on approval.
        let (status, _) = interact(&app, &click(&root, MAYA_SLACK, "approve"), SIGNING_SECRET, 0).await;
        assert_eq!(status, StatusCode::OK);
        let maya = app.login(Actor::Manager).await;
        let detail = request(&app, &id).await;
        assert_eq!(detail["reviews"][0]["reviewer_id"], maya.user_id());
        let execution = detail["executions"][0]["id"].as_str().expect("it ran").to_owned();
        let done = crate::harness::finished(&app, &maya.token, &execution).await;
        assert_eq!(done["status"], "succeeded", "{done}");

        let page = settled(&app).await;
        assert!(page["counts"].get("dead").is_none(), "{page}");
        let thread = slack.thread(&slack.root_of(&id).expect("root"));
        assert_eq!(thread.len(), 2, "{thread:#?}");
        assert!(thread[0].text.contains("approved"), "{}", thread[0].text);
        let finished = thread[1].blocks.to_string();
        assert!(finished.contains("Succeeded"), "{finished}");
        assert!(finished.contains("rows returned"), "{finished}");
        assert!(finished.contains("email") && finished.contains("first 3 of"), "a small table: {finished}");

        // The first message was redrawn in place, last with the outcome and without buttons.
        let root = slack.root_of(&id).expect("root");
        assert!(!root.updates.is_empty(), "{:#?}", root.updates);
        let now = root.blocks.to_string();
        assert!(now.contains("Succeeded") && !now.contains("\"approve\""), "{now}");

        // Dan heard by direct message, and his Slack id is now known.
        let dms: Vec<_> = slack.messages().into_iter().filter(|m| m.channel == "D0DAN").collect();
        assert_eq!(dms.len(), 2, "approved, then finished: {dms:#?}");
        assert!(dms[0].text.contains("approved by Maya"), "{}", dms[0].text);
        assert!(dms[1].text.contains("finished: succeeded"), "{}", dms[1].text);

        // The author's Slack user was looked up once, by email, then remembered.
        let lookups: Vec<_> = slack.calls().into_iter().filter(|c| c.method == "users.lookupByEmail").map(|c| c.body["email"].clone()).collect();
        assert_eq!(lookups, [json!("dan@example.com")]);

        // Every call Slack received was accepted.
        let refused: Vec<_> = slack.calls().into_iter().filter(|c| c.error.is_some()).collect();
        assert!(refused.is_empty(), "{refused:#?}");
    }

    async fn interactions_refuse_forgeries_and_apply_the_review_rules(kind) {
        let slack = standin().await;
        let app = slack_app(kind, &slack).await;
        let r = file(&app, "SELECT count(*) FROM customers").await;
        let id = r["id"].as_str().expect("id").to_owned();
        let root = slack.wait_for("the request's message", |s| s.root_of(&id)).await;
        let approve = click(&root, MAYA_SLACK, "approve");

        let (status, body) = interact(&app, &approve, "not the signing secret", 0).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("invalid_signature"), "{body}");
        let (status, body) = interact(&app, &approve, SIGNING_SECRET, 6 * 60).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("stale_signature"), "{body}");
        let unsigned = app
            .client
            .post(app.url("/api/v1/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&approve))
            .send()
            .await
            .expect("post");
        assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);

        // Signed, but by people who may not approve: a developer (the author), a stranger,
        // another POD's manager.
        for (who, says) in [
            (DAN_SLACK, "only managers of the request's POD"),
            (STRANGER_SLACK, "No Quorum account uses your Slack email"),
            (GINA_SLACK, "You cannot see this request"),
        ] {
            let before = slack.ephemerals().len();
            let (status, _) = interact(&app, &click(&root, who, "approve"), SIGNING_SECRET, 0).await;
            assert_eq!(status, StatusCode::OK);
            let told = slack.ephemerals();
            assert_eq!(told.len(), before + 1, "{who}: {told:#?}");
            let last = &told[before];
            assert_eq!(last["user"], who);
            assert!(last["text"].as_str().unwrap_or_default().contains(says), "{who}: {last}");
        }
        let detail = request(&app, &id).await;
        assert_eq!(detail["status"], "pending", "nothing changed: {detail}");
        assert_eq!(detail["reviews"], json!([]));

        // A manager cannot approve their own request from Slack either.
        let own = file_as(&app, Actor::Manager, "SELECT count(*) FROM orders").await;
        let own_id = own["id"].as_str().expect("id").to_owned();
        let own_root = slack.wait_for("Maya's request", |s| s.root_of(&own_id)).await;
        interact(&app, &click(&own_root, MAYA_SLACK, "approve"), SIGNING_SECRET, 0).await;
        let told = slack.ephemerals();
        let last = told.last().expect("told");
        assert_eq!(last["user"], MAYA_SLACK);
        assert!(last["text"].as_str().unwrap_or_default().contains("you wrote or last edited this request"), "{last}");
        assert_eq!(request(&app, &own_id).await["status"], "pending");

        // A click on a message showing an older revision approves nothing.
        let dan = app.login(Actor::Developer).await;
        let (status, revised) = app
            .patch(&format!("/api/v1/requests/{id}"), &dan.token, json!({"content": "SELECT count(*) FROM orders"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{revised}");
        settled(&app).await;
        let note = slack.thread(&root).pop().expect("a reply about the revision");
        assert!(note.broadcast && note.text.contains("Revision 2"), "{note:#?}");
        let before = slack.ephemerals().len();
        interact(&app, &approve, SIGNING_SECRET, 0).await;
        let told = slack.ephemerals();
        assert!(told[before]["text"].as_str().unwrap_or_default().contains("older revision"), "{told:#?}");
        assert_eq!(request(&app, &id).await["reviews"], json!([]));

        // Reject asks for a reason in a modal, then rejects with it.
        settled(&app).await;
        let root = slack.root_of(&id).expect("root");
        let (status, _) = interact(&app, &click(&root, MAYA_SLACK, "reject"), SIGNING_SECRET, 0).await;
        assert_eq!(status, StatusCode::OK);
        let view = slack.views().pop().expect("a modal opened");
        assert_eq!(view["callback_id"], "reject");
        let submit = |reason: &str| json!({
            "type": "view_submission",
            "user": { "id": MAYA_SLACK },
            "view": {
                "callback_id": "reject",
                "private_metadata": view["private_metadata"],
                "state": { "values": { "reason": { "reason": { "type": "plain_text_input", "value": reason } } } },
            },
        });
        let (status, body) = interact(&app, &submit("   "), SIGNING_SECRET, 0).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("response_action") && body.contains("say why"), "{body}");
        let (status, body) = interact(&app, &submit("Use the reporting replica"), SIGNING_SECRET, 0).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.is_empty(), "the modal closes: {body}");
        let detail = request(&app, &id).await;
        assert_eq!(detail["status"], "rejected", "{detail}");
        assert_eq!(detail["reviews"][0]["comment"], "Use the reporting replica");

        // A request whose time ran out is not approved from an old message.
        let late = file(&app, "SELECT 2").await;
        let late_id = late["id"].as_str().expect("id").to_owned();
        let late_root = slack.wait_for("the late request", |s| s.root_of(&late_id)).await;
        app.clock.advance(chrono::Duration::days(8));
        interact(&app, &click(&late_root, MAYA_SLACK, "approve"), SIGNING_SECRET, 0).await;
        let told = slack.ephemerals();
        assert!(told.last().expect("told")["text"].as_str().unwrap_or_default().contains("expired"), "{told:#?}");
        assert_eq!(request(&app, &late_id).await["status"], "expired");

        // An instance that forbids approving from Slack shows a portal link instead of buttons
        // and refuses a forged click.
        set_shop(&app, json!({"slack_approval": false})).await;
        let other = file(&app, "SELECT 1").await;
        let other_id = other["id"].as_str().expect("id").to_owned();
        let root = slack.wait_for("the second request's message", |s| s.root_of(&other_id)).await;
        let raw = root.blocks.to_string();
        assert!(!raw.contains("\"approve\"") && raw.contains("Review in the portal"), "{raw}");
        let mut forged = approve.clone();
        forged["actions"][0]["value"] = json!(json!({
            "request": other_id, "revision": 1, "hash": other["revision_hash"],
        }).to_string());
        interact(&app, &forged, SIGNING_SECRET, 0).await;
        let told = slack.ephemerals();
        assert!(told.last().expect("told")["text"].as_str().unwrap_or_default().contains("in the portal only"), "{told:#?}");
        assert_eq!(request(&app, &other_id).await["status"], "pending");
    }

    async fn failed_sends_are_retried_with_backoff_and_retry_after(kind) {
        let slack = standin().await;
        let app = slack_app(kind, &slack).await;
        slack.fail_next([Fail::Status(500), Fail::RateLimited(7)]);
        let r = file(&app, "SELECT 1").await;
        let id = r["id"].as_str().expect("id").to_owned();

        let first = |page: &Value| page["items"].as_array().and_then(|i| i.first().cloned());
        slack.wait_for("the first attempt", |s| (!s.calls().is_empty()).then_some(())).await;
        let d = wait_delivery(&app, |d| d["attempts"] == 1).await;
        let h = &d["history"][0];
        let gap = secs_between(&h["at"], &h["retry_at"]);
        assert!((0.0..=2.0).contains(&gap), "full jitter within the first 2 s window: {gap}");

        app.clock.advance(chrono::Duration::milliseconds(2100));
        let d = wait_delivery(&app, |d| d["attempts"] == 2).await;
        let h = &d["history"][1];
        let gap = secs_between(&h["at"], &h["retry_at"]);
        assert!((7.0..=8.0).contains(&gap), "Retry-After: 7 honoured: {gap}");

        // Five seconds on, still too early: nothing is sent.
        app.clock.advance(chrono::Duration::seconds(5));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(slack.calls().len(), 2, "{:#?}", slack.calls());
        app.clock.advance(chrono::Duration::seconds(3));
        slack.wait_for("the message", |s| s.root_of(&id)).await;
        let page = settled(&app).await;
        let d = first(&page).expect("delivery");
        assert_eq!(d["state"], "sent", "{d}");
        assert_eq!(d["attempts"], 3);
        let posted: Vec<_> = slack.messages().into_iter().filter(|m| m.thread_ts.is_none()).collect();
        assert_eq!(posted.len(), 1, "delivered once: {posted:#?}");
    }

    async fn a_delivery_that_keeps_failing_is_dead_lettered_and_can_be_retried(kind) {
        let slack = standin().await;
        let app = slack_app(kind, &slack).await;
        slack.fail_next(std::iter::repeat_n(Fail::Status(502), 5));
        let r = file(&app, "SELECT 1").await;
        let id = r["id"].as_str().expect("id").to_owned();
        for attempt in 1..=5 {
            wait_delivery(&app, |d| d["attempts"] == attempt).await;
            app.clock.advance(chrono::Duration::seconds(301));
        }
        let d = wait_delivery(&app, |d| d["state"] == "dead").await;
        assert_eq!(d["history"].as_array().map(Vec::len), Some(5));
        assert_eq!(slack.calls().len(), 5, "no sixth attempt");
        assert!(slack.root_of(&id).is_none());
        // The request itself is untouched, and admins see the failure in the audit log.
        assert_eq!(request(&app, &id).await["status"], "pending");
        let admin = app.login(Actor::Admin).await;
        let (_, audit) = app.get("/api/v1/audit?action=slack.notification_failed", &admin.token).await;
        assert_eq!(audit["total"], 1, "{audit}");
        let metrics = app.metrics().await;
        assert!(metrics.contains("quorum_slack_deliveries_total{outcome=\"dead\"} 1"), "{metrics}");

        let delivery = d["id"].as_str().expect("id");
        let (status, again) = app.post(&format!("/api/v1/slack/deliveries/{delivery}/retry"), &admin.token, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        slack.wait_for("the retried message", |s| s.root_of(&id)).await;
        let (status, twice) = app.post(&format!("/api/v1/slack/deliveries/{delivery}/retry"), &admin.token, json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{twice}");
        assert_eq!(twice["error"]["code"], "not_dead");
        let (status, bad) = app.get("/api/v1/slack/deliveries?state=lost", &admin.token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(bad["error"]["code"], "invalid_state");
        let (status, dead) = app.get("/api/v1/slack/deliveries?state=dead", &admin.token).await;
        assert_eq!(status, StatusCode::OK, "{dead}");
        assert_eq!(dead["total"], 0, "the retried delivery is no longer dead: {dead}");
        assert_eq!(dead["mode"], "bot");
    }

    async fn an_outage_across_a_restart_delivers_each_message_once(kind) {
        let slack = standin().await;
        slack.go_down(503);
        let app = slack_app(kind, &slack).await;
        let mut ids = Vec::new();
        for n in 0..3 {
            let r = file(&app, &format!("SELECT {n}")).await;
            ids.push(r["id"].as_str().expect("id").to_owned());
        }
        slack.wait_for("three failed attempts", |s| (s.calls().len() >= 3).then_some(())).await;
        // The breaker opened: waiting deliveries keep their attempts for when Slack is back.
        let mut metrics = String::new();
        for _ in 0..100 {
            metrics = app.metrics().await;
            if metrics.contains("quorum_slack_breaker_open 1") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(metrics.contains("quorum_slack_breaker_open 1"), "{metrics}");
        assert!(metrics.contains("quorum_slack_outbox_pending 3"), "{metrics}");

        let url = app.database_url();
        let dir = app.stop().await;
        let app = TestApp::spawn_on(kind, dir, &url, &bot_config(&slack)).await;
        // An hour of outage, then Slack is back.
        app.clock.advance(chrono::Duration::hours(1));
        tokio::time::sleep(Duration::from_millis(500)).await;
        slack.recover();
        app.clock.advance(chrono::Duration::minutes(10));
        for id in &ids {
            slack.wait_for("each message", |s| s.root_of(id)).await;
        }
        let page = settled(&app).await;
        assert_eq!(page["counts"]["sent"], 3, "{page}");
        assert!(page["counts"].get("dead").is_none(), "{page}");
        let roots: Vec<_> = slack.messages().into_iter().filter(|m| m.thread_ts.is_none()).collect();
        assert_eq!(roots.len(), 3, "each exactly once: {roots:#?}");
        // The queued messages left at most one a second for their channel.
        let sent: Vec<_> = slack
            .calls()
            .into_iter()
            .filter(|c| c.method == "chat.postMessage" && c.error.is_none())
            .map(|c| c.at)
            .collect();
        assert_eq!(sent.len(), 3);
        for pair in sent.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(950), "{gap:?}");
        }
    }

    async fn oversized_results_stay_within_slacks_limits(kind) {
        let slack = standin().await;
        let app = slack_app(kind, &slack).await;
        // 500 columns of 200 characters each, a long justification and a long query.
        let columns: Vec<String> = (0..500).map(|i| format!("replace(hex(zeroblob(100)), '0', '<') AS \"c{i}<!here>\"")).collect();
        let sql = format!("SELECT {}\n{}", columns.join(", "), "-- filler\n".repeat(2000));
        let r = file(&app, &sql).await;
        let id = r["id"].as_str().expect("id").to_owned();
        let root = slack.wait_for("the request's message", |s| s.root_of(&id)).await;
        interact(&app, &click(&root, MAYA_SLACK, "approve"), SIGNING_SECRET, 0).await;
        let detail = request(&app, &id).await;
        let execution = detail["executions"][0]["id"].as_str().expect("it ran").to_owned();
        let maya = app.login(Actor::Manager).await;
        crate::harness::finished(&app, &maya.token, &execution).await;
        let page = settled(&app).await;
        assert!(page["counts"].get("dead").is_none(), "{page}");
        for m in slack.messages() {
            let total = slack_standin::validate_blocks(&m.blocks).expect("valid blocks");
            assert!(total <= 12_000, "{total}");
            assert!(m.blocks.as_array().map_or(0, Vec::len) <= 50);
            assert!(!m.blocks.to_string().contains("<!here>"));
        }
        let thread = slack.thread(&slack.root_of(&id).expect("root"));
        let finished = thread.last().expect("finished").blocks.to_string();
        assert!(finished.contains("492 more columns"), "{finished}");
    }

    async fn a_webhook_gets_plain_messages_without_buttons(kind) {
        let slack = standin().await;
        let config = format!(
            "[slack]\nwebhook_url = \"{}\"\ndefault_channel = \"#quorum\"\napi_base_url = \"{}\"\n",
            slack.webhook_url, slack.api_base
        );
        let app = TestApp::spawn_with(kind, &config).await;
        let r = file(&app, "SELECT 1").await;
        let id = r["id"].as_str().expect("id").to_owned();
        let posted = slack.wait_for("the webhook message", |s| s.webhook_messages().pop()).await;
        let raw = posted["blocks"].to_string();
        assert!(raw.contains(&id) && raw.contains("&lt;!channel&gt;"), "{raw}");
        assert!(!raw.contains("\"approve\""), "{raw}");
        let maya = app.login(Actor::Manager).await;
        let (status, _) = app.post(
            &format!("/api/v1/requests/{id}/reviews"),
            &maya.token,
            json!({"decision": "approve", "comment": "", "revision_hash": r["revision_hash"]}),
        ).await;
        assert_eq!(status, StatusCode::OK);
        let page = settled(&app).await;
        assert_eq!(page["mode"], "webhook");
        assert!(page["counts"].get("dead").is_none(), "{page}");
        assert!(page["counts"]["skipped"].as_i64().unwrap_or(0) >= 2, "updates and DMs are skipped: {page}");
        assert!(slack.calls().is_empty(), "no Web API call without a token");
        assert!(slack.webhook_messages().len() >= 3, "filed, approved, finished");
    }

    async fn without_slack_nothing_is_queued(kind) {
        let app = TestApp::spawn(kind).await;
        app.file_request(&app.login(Actor::Developer).await, "SELECT 1").await;
        let page = deliveries(&app, "").await;
        assert_eq!(page["mode"], "off");
        assert_eq!(page["total"], 0, "{page}");
        let payload = json!({"type": "block_actions", "user": {"id": MAYA_SLACK}});
        let (status, body) = interact(&app, &payload, SIGNING_SECRET, 0).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body.contains("slack_not_configured"), "{body}");
    }
}

/// Polls the newest delivery until `check` holds.
async fn wait_delivery(app: &TestApp, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let page = deliveries(app, "?per_page=1").await;
        if let Some(d) = page["items"].get(0)
            && check(d)
        {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no delivery got there: {}", deliveries(app, "").await);
}

fn secs_between(a: &Value, b: &Value) -> f64 {
    let t = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time")).expect("rfc3339")
    };
    (t(b) - t(a)).num_milliseconds() as f64 / 1000.0
}
