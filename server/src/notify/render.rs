//! Slack messages drawn from the request as it stands and the event that happened. Everything a
//! person typed (names, justifications, content, comments, result cells, error messages) goes
//! through `escape`; every message goes through `Message::fitted`.

use serde_json::{Value, json};

use crate::domain::execution::{ExecStatus, ResultSet};
use crate::domain::slack::{
    ButtonValue, Event, MAX_HEADER_CHARS, Message, cut, escape, escape_code, link, plain, section,
};
use crate::domain::workflow::{Decision, Status};
use crate::store::{Execution, Instance, Pod, RequestRecord, Revision, StoreResult, User};

/// Lines of the request's content shown in its message.
const CONTENT_LINES: usize = 15;
const CONTENT_CHARS: usize = 1500;
/// Rows and columns of the result shown in the thread.
const TABLE_ROWS: usize = 3;
const TABLE_COLUMNS: usize = 8;
const CELL_CHARS: usize = 40;

/// A request and what its messages mention.
#[derive(Debug, Clone)]
pub struct Subject {
    pub request: RequestRecord,
    pub revision: Revision,
    pub author: User,
    pub pod: Pod,
    pub instance: Instance,
    /// The request's page in the portal.
    pub url: String,
}

impl Subject {
    pub async fn load(
        store: &crate::store::SharedStore,
        id: crate::domain::RequestId,
        portal: &str,
    ) -> StoreResult<Option<Subject>> {
        let Some(request) = store.get_request(id).await? else {
            return Ok(None);
        };
        let revision = store
            .request_revisions(id)
            .await?
            .into_iter()
            .find(|v| v.number == request.revision);
        let author = store.get_user(request.author_id).await?;
        let pod = store.get_pod(request.pod_id).await?;
        let instance = store.get_instance(request.instance_id).await?;
        let (Some(revision), Some(author), Some(pod), Some(instance)) =
            (revision, author, pod, instance)
        else {
            return Ok(None);
        };
        Ok(Some(Subject {
            url: format!("{portal}/requests/{}", request.id),
            request,
            revision,
            author,
            pod,
            instance,
        }))
    }

    fn more(&self) -> String {
        format!("Cut to fit Slack: {}", link(&self.url, "see the portal"))
    }

    fn title(&self) -> String {
        format!(
            "{} {} on {} / {}",
            self.request.mode.as_str(),
            self.request.kind.as_str(),
            self.instance.name,
            self.request.database
        )
    }
}

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Pending => ":hourglass_flowing_sand: Awaiting review",
        Status::ChangesRequested => ":leftwards_arrow_with_hook: Changes requested",
        Status::Approved => ":white_check_mark: Approved",
        Status::Rejected => ":no_entry: Rejected",
        Status::Cancelled => ":heavy_multiplication_x: Cancelled",
        Status::Expired => ":alarm_clock: Expired",
        Status::Running => ":arrows_counterclockwise: Running",
        Status::Succeeded => ":large_green_circle: Succeeded",
        Status::Failed => ":red_circle: Failed",
        Status::TimedOut => ":red_circle: Timed out",
        Status::Interrupted => ":warning: Interrupted (outcome unknown)",
    }
}

/// The first lines of the content, in a code block.
fn excerpt(content: &str) -> String {
    let lines: Vec<&str> = content.lines().collect();
    let mut shown = lines
        .iter()
        .take(CONTENT_LINES)
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    let (head, was_cut) = cut(&shown, CONTENT_CHARS);
    let more_lines = lines.len() > CONTENT_LINES;
    if was_cut || more_lines {
        shown = format!("{head}\n…");
    }
    format!("```{}```", escape_code(&shown))
}

/// The request's first message: what is asked, by whom, its status, and (while it awaits review)
/// Approve / Reject buttons when the instance allows approving from Slack.
pub fn root(s: &Subject, buttons: bool) -> Message {
    let r = &s.request;
    let header = json!({
        "type": "header",
        "text": plain(&format!("Request: {}", s.title()), MAX_HEADER_CHARS),
    });
    let fields = json!({
        "type": "section",
        "fields": [
            { "type": "mrkdwn", "text": format!("*Author*\n{}", escape(&s.author.name)) },
            { "type": "mrkdwn", "text": format!("*POD*\n{}", escape(&s.pod.name)) },
            { "type": "mrkdwn", "text": format!("*Instance*\n{} ({})", escape(&s.instance.name), escape(&s.instance.environment)) },
            { "type": "mrkdwn", "text": format!("*Database*\n{}", escape(&r.database)) },
            { "type": "mrkdwn", "text": format!("*Kind / mode*\n{} / {}", r.kind.as_str(), r.mode.as_str()) },
            { "type": "mrkdwn", "text": format!("*Status*\n{}", status_label(r.status)) },
        ],
    });
    let more = s.more();
    let mut blocks = vec![
        header,
        fields,
        section(
            &format!(
                "*Justification*\n>{}",
                escape(&r.justification).replace('\n', "\n>")
            ),
            &more,
        ),
        section(&excerpt(&s.revision.content), &more),
    ];
    let open = json!({
        "type": "button",
        "text": plain("Open in the portal", 75),
        "url": s.url,
        "action_id": "open",
    });
    if r.status == Status::Pending {
        let mut elements = Vec::new();
        if buttons && s.instance.slack_approval {
            let value = serde_json::to_string(&ButtonValue {
                request: r.id.0,
                revision: r.revision,
                hash: r.revision_hash.clone(),
            })
            .unwrap_or_default();
            elements.push(json!({ "type": "button", "text": plain("Approve", 75), "style": "primary", "action_id": "approve", "value": value }));
            elements.push(json!({ "type": "button", "text": plain("Reject", 75), "style": "danger", "action_id": "reject", "value": value }));
        } else {
            // Approving from Slack is off for this instance (or this is a webhook): review in
            // the portal.
            elements.push(json!({
                "type": "button",
                "text": plain("Review in the portal", 75),
                "url": s.url,
                "action_id": "open",
            }));
        }
        if elements.len() > 1 {
            elements.push(open);
        }
        blocks.push(json!({ "type": "actions", "block_id": "review", "elements": elements }));
    } else {
        blocks.push(json!({ "type": "actions", "block_id": "open", "elements": [open] }));
    }
    blocks.push(context(&format!(
        "Revision {} · {}",
        r.revision,
        link(&s.url, &r.id.to_string())
    )));
    Message {
        text: format!(
            "{} asks to run a {} on {} / {}: {}",
            escape(&s.author.name),
            s.request.kind.as_str(),
            escape(&s.instance.name),
            escape(&r.database),
            status_label(r.status)
        ),
        blocks,
    }
    .fitted(&more)
}

fn context(text: &str) -> Value {
    json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": text }] })
}

fn name_of(user: Option<&User>) -> String {
    user.map_or_else(|| "Quorum".to_owned(), |u| escape(&u.name))
}

/// The message a thread (or, without one, the channel) gets for an event.
pub fn event_message(
    s: &Subject,
    event: &Event,
    actor: Option<&User>,
    execution: Option<(&Execution, Option<&ResultSet>)>,
) -> Message {
    let more = s.more();
    let who = name_of(actor);
    let (text, mut blocks) = match event {
        Event::Filed { revision, .. } => {
            let text = format!(
                "*Revision {revision}* by {who}: earlier approvals no longer count; it needs review again."
            );
            let blocks = vec![
                section(&text, &more),
                section(&excerpt(&s.revision.content), &more),
            ];
            (text, blocks)
        }
        Event::Reviewed {
            decision,
            comment,
            approvals,
            required,
            status,
            ..
        } => {
            let text = match Decision::parse(decision) {
                Some(Decision::Approve) if status == "approved" => format!(
                    ":white_check_mark: {who} approved ({approvals} of {required}); the request is approved."
                ),
                Some(Decision::Approve) => {
                    format!(":+1: {who} approved ({approvals} of {required} approvals).")
                }
                Some(Decision::Reject) => format!(":no_entry: {who} rejected the request."),
                _ => format!(":leftwards_arrow_with_hook: {who} asked for changes."),
            };
            let mut blocks = vec![section(&text, &more)];
            if !comment.trim().is_empty() {
                blocks.push(section(
                    &format!(">{}", escape(comment).replace('\n', "\n>")),
                    &more,
                ));
            }
            (text, blocks)
        }
        Event::Status { status, .. } => {
            let text = match Status::parse(status) {
                Some(Status::Cancelled) => {
                    format!(":heavy_multiplication_x: {who} cancelled the request.")
                }
                Some(Status::Expired) => {
                    ":alarm_clock: The request expired: its time to be decided on or run ran out."
                        .to_owned()
                }
                Some(other) => status_label(other).to_owned(),
                None => escape(status),
            };
            let blocks = vec![section(&text, &more)];
            (text, blocks)
        }
        Event::Finished { .. } => finished(execution, &more),
    };
    blocks.push(context(&link(&s.url, "Open the request in the portal")));
    Message {
        text: format!("{} — {}", escape(&s.title()), plain_fallback(&text)),
        blocks,
    }
    .fitted(&more)
}

/// The fallback text shown in notifications: the first line, without emoji codes.
fn plain_fallback(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.split(' ')
        .filter(|w| !(w.starts_with(':') && w.ends_with(':') && w.len() > 2))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An execution's error: its kind, the script position unless the message already ends with it
/// (a script's does), and the message as code.
fn error_text(err: &crate::domain::execution::ExecError) -> String {
    let mut where_ = String::new();
    if let (Some(l), Some(c)) = (err.line, err.column) {
        where_ = format!(" (line {l}, column {c})");
    }
    if err.message.ends_with(&where_) {
        where_.clear();
    }
    format!(
        "*{}*{where_}\n```{}```",
        err.kind.as_str(),
        escape_code(&err.message)
    )
}

fn finished(
    execution: Option<(&Execution, Option<&ResultSet>)>,
    more: &str,
) -> (String, Vec<Value>) {
    let Some((e, result)) = execution else {
        let text = "The execution finished; see the portal for its outcome.".to_owned();
        return (text.clone(), vec![section(&text, more)]);
    };
    let duration = e
        .finished_at
        .map(|f| f - e.started_at)
        .map(|d| format!(" in {:.1} s", d.num_milliseconds() as f64 / 1000.0))
        .unwrap_or_default();
    let returned: u64 = e.statements.iter().map(|st| st.rows_returned).sum();
    let affected: u64 = e.statements.iter().map(|st| st.rows_affected).sum();
    let shown = result.map_or(0, |r| r.rows.len());
    let mut counts = Vec::new();
    if returned > 0 || shown > 0 {
        counts.push(format!("{} rows returned", returned.max(shown as u64)));
    }
    if affected > 0 {
        counts.push(format!("{affected} rows affected"));
    }
    let label = match e.status {
        ExecStatus::Succeeded => status_label(Status::Succeeded),
        ExecStatus::TimedOut => status_label(Status::TimedOut),
        ExecStatus::Interrupted => status_label(Status::Interrupted),
        _ => status_label(Status::Failed),
    };
    let mut text = format!("{label}{duration}");
    if !counts.is_empty() {
        text.push_str(&format!(" · {}", counts.join(", ")));
    }
    let mut blocks = vec![section(&text, more)];
    if let Some(err) = &e.error {
        blocks.push(section(&error_text(err), more));
    }
    if let Some(r) = result.filter(|r| !r.rows.is_empty()) {
        blocks.push(section(&table(r), more));
    }
    (text, blocks)
}

fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = s.replace(['\n', '\r', '\t'], " ");
    let (head, was_cut) = cut(&s, CELL_CHARS);
    if was_cut {
        format!("{head}…")
    } else {
        head.to_owned()
    }
}

/// The first rows of a result as a small fixed-width table in a code block.
pub fn table(r: &ResultSet) -> String {
    let columns = r.columns.len().min(TABLE_COLUMNS);
    let mut grid: Vec<Vec<String>> = vec![
        r.columns
            .iter()
            .take(columns)
            .map(|c| cut(&c.name, CELL_CHARS).0.to_owned())
            .collect(),
    ];
    for row in r.rows.iter().take(TABLE_ROWS) {
        grid.push(row.iter().take(columns).map(cell).collect());
    }
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            grid.iter()
                .filter_map(|row| row.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let lines: Vec<String> = grid
        .iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join(" | ")
                .trim_end()
                .to_owned()
        })
        .collect();
    let mut notes = Vec::new();
    if r.rows.len() > TABLE_ROWS {
        notes.push(format!("first {TABLE_ROWS} of {} rows", r.rows.len()));
    }
    if r.columns.len() > columns {
        notes.push(format!("{} more columns", r.columns.len() - columns));
    }
    let mut out = format!("```{}```", escape_code(&lines.join("\n")));
    if !notes.is_empty() {
        out.push_str(&format!("\n_{}_", notes.join(", ")));
    }
    out
}

/// The direct message to the author about an event on their request.
pub fn direct_message(s: &Subject, event: &Event, actor: Option<&User>) -> Message {
    let who = name_of(actor);
    let request = link(&s.url, &s.title());
    let text = match event {
        Event::Reviewed {
            decision, status, ..
        } => match Decision::parse(decision) {
            Some(Decision::Approve) if status == "approved" => {
                format!("Your request {request} was approved by {who}.")
            }
            Some(Decision::Approve) => {
                format!("{who} approved your request {request}; it needs more approvals.")
            }
            Some(Decision::Reject) => format!("{who} rejected your request {request}."),
            _ => format!("{who} asked for changes to your request {request}."),
        },
        Event::Finished { status, .. } => {
            format!(
                "Your request {request} finished: {}.",
                escape(status).replace('_', " ")
            )
        }
        _ => format!("Your request {request} changed."),
    };
    Message {
        text: text.clone(),
        blocks: vec![section(&text, &s.more())],
    }
    .fitted(&s.more())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::execution::{Column, ErrorKind, ExecError};

    #[test]
    fn an_error_names_its_position_once() {
        let at = |message: &str| ExecError {
            line: Some(2),
            column: Some(11),
            ..ExecError::new(ErrorKind::Script, message)
        };
        assert_eq!(
            error_text(&at("Error: boom (line 2, column 11)")),
            "*script*\n```Error: boom (line 2, column 11)```"
        );
        assert_eq!(
            error_text(&at("Error: boom")),
            "*script* (line 2, column 11)\n```Error: boom```"
        );
        assert_eq!(
            error_text(&ExecError::new(
                ErrorKind::DbError,
                "relation \"x\" does not exist"
            )),
            "*db_error*\n```relation \"x\" does not exist```"
        );
    }

    #[test]
    fn tables_escape_cells_and_say_what_was_left_out() {
        let r = ResultSet {
            statement: 0,
            columns: (0..10)
                .map(|i| Column {
                    name: format!("c{i}"),
                    type_name: "TEXT".into(),
                })
                .collect(),
            rows: (0..5)
                .map(|_| {
                    (0..10)
                        .map(|i| match i {
                            0 => json!("<!channel> ```"),
                            1 => Value::Null,
                            _ => json!("x".repeat(100)),
                        })
                        .collect()
                })
                .collect(),
            truncated: false,
        };
        let t = table(&r);
        assert!(t.contains("&lt;!channel&gt;"), "{t}");
        assert!(!t.contains("<!channel>"));
        assert_eq!(
            t.matches("```").count(),
            2,
            "the cell cannot close the block: {t}"
        );
        assert!(t.contains("NULL"));
        assert!(t.contains("first 3 of 5 rows, 2 more columns"));
        assert_eq!(t.lines().count(), 1 + 3 + 1, "{t}");
    }

    #[test]
    fn fallback_text_drops_emoji_codes() {
        assert_eq!(
            plain_fallback(":no_entry: Ann rejected it.\nmore"),
            "Ann rejected it."
        );
    }
}
