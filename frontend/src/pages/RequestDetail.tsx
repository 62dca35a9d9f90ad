import { useEffect, useMemo, useState, type FormEvent } from "react";
import { api, type Execution, type RequestDetail as Detail, type Schemas } from "../api/client";
import { useAuth } from "../auth";
import { Code, type Mark } from "../components/Code";
import { Results } from "../components/Results";
import { ErrorNote, Loading, StatusBadge, When } from "../components/ui";
import { useApi, useInstanceNames, type Loaded } from "../data";
import { navigate } from "../router";

const DECISIONS = [
  { value: "approve", label: "Approve" },
  { value: "request_changes", label: "Request changes" },
  { value: "reject", label: "Reject" },
] as const;

function language(kind: string): "sql" | "javascript" {
  return kind === "script" ? "javascript" : "sql";
}

export function RequestDetail({ id }: { id: string }) {
  const { me } = useAuth();
  const { data: r, error, reload } = useApi<Detail>(`/api/v1/requests/${id}`);
  const instances = useInstanceNames();
  const latest = r?.executions[r.executions.length - 1];
  // One view of the latest execution, shared by the content (failing line) and the panel.
  const execution = useApi<Execution>(latest ? `/api/v1/executions/${latest.id}` : null);
  const [now, setNow] = useState(() => Date.now());
  const running = execution.data?.status === "running" || execution.data?.status === "queued";
  const reloadExecution = execution.reload;
  useEffect(() => {
    if (!running) return;
    const t = window.setInterval(() => {
      setNow(Date.now());
      reloadExecution();
    }, 1000);
    return () => window.clearInterval(t);
  }, [running, reloadExecution]);

  // Follow the request: every second once approved or running, every five while it waits for
  // a review (so its author sees the decision land); not at all once it ended.
  const status = r?.status;
  useEffect(() => {
    const every = status === "running" || status === "approved" ? 1000 : status === "pending" || status === "changes_requested" ? 5000 : 0;
    if (!every) return;
    const t = window.setInterval(reload, every);
    return () => window.clearInterval(t);
  }, [status, reload]);

  if (error) return <main><ErrorNote error={error} /></main>;
  if (!r) return <main><Loading what="the request" /></main>;
  const mine = r.author_id === me?.user.id;

  return (
    <main>
      <div className="title-row">
        <h1>{r.justification}</h1>
        <StatusBadge status={r.status} />
      </div>
      <dl className="meta">
        <dt>Target</dt>
        <dd>{instances.get(r.instance_id) ?? "instance"} / {r.database}</dd>
        <dt>Kind</dt>
        <dd>{r.mode} {r.kind}</dd>
        <dt>Revision</dt>
        <dd>{r.revision}</dd>
        <dt>Approvals</dt>
        <dd>{r.approvals} of {r.required_approvals}</dd>
        <dt>Filed</dt>
        <dd><When at={r.created_at} /> by {mine ? "you" : r.author_name}</dd>
        {r.expires_at && (<><dt>Expires</dt><dd><When at={r.expires_at} /></dd></>)}
      </dl>
      <Content r={r} execution={execution.data} />
      <Revisions r={r} />
      <Actions r={r} mine={mine} onChange={reload} />
      <Reviews r={r} onReviewed={reload} />
      {latest && <ExecutionPanel loaded={execution} now={now} running={running} />}
    </main>
  );
}

function Content({ r, execution: e }: { r: Detail; execution: Execution | undefined }) {
  const marked = useMemo<Mark[]>(() => {
    const err = e?.error;
    return err?.line ? [{ line: err.line, message: err.message }] : [];
  }, [e?.error]);
  return (
    <section aria-labelledby="content-h">
      <h2 id="content-h">Content</h2>
      <Code value={r.content} language={language(r.kind)} marked={marked} label="Request content" />
      {r.kind === "query" && <Explain r={r} />}
    </section>
  );
}

function Explain({ r }: { r: Detail }) {
  const [plans, setPlans] = useState<Schemas["StatementPlan"][] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const explain = async () => {
    setError(null);
    try {
      const body = { instance_id: r.instance_id, database: r.database, content: r.content };
      setPlans((await api<Schemas["ExplainResponse"]>("POST", "/api/v1/requests/explain", body)).plans);
    } catch (e) {
      setError(e);
    }
  };
  return (
    <>
      <div className="row">
        <button type="button" className="secondary" onClick={() => void explain()}>EXPLAIN</button>
      </div>
      <ErrorNote error={error} />
      {plans?.map((p) => (
        <details key={p.index} open>
          <summary>Plan of statement {p.index + 1}</summary>
          <pre className="plan">{p.plan}</pre>
        </details>
      ))}
    </>
  );
}

function Actions({ r, mine, onChange }: { r: Detail; mine: boolean; onChange: () => void }) {
  const [error, setError] = useState<unknown>(null);
  const act = async (path: string) => {
    setError(null);
    try {
      await api("POST", path, {});
      onChange();
    } catch (e) {
      setError(e);
    }
  };
  const cancellable = mine && ["pending", "changes_requested", "approved"].includes(r.status);
  const runnable = mine && r.status === "approved";
  return (
    <div className="row">
      {cancellable && <button type="button" className="secondary" onClick={() => navigate(`/requests/${r.id}/edit`)}>Edit</button>}
      <button type="button" className="secondary" onClick={() => navigate(`/requests/new?from=${r.id}`)}>Clone</button>
      {runnable && <button type="button" onClick={() => void act(`/api/v1/requests/${r.id}/run`)}>Run now</button>}
      {cancellable && <button type="button" className="secondary" onClick={() => void act(`/api/v1/requests/${r.id}/cancel`)}>Cancel request</button>}
      <ErrorNote error={error} />
    </div>
  );
}

function Revisions({ r }: { r: Detail }) {
  const [shown, setShown] = useState(r.revision);
  if (r.revisions.length < 2) return null;
  const v = r.revisions.find((x) => x.number === shown);
  return (
    <section aria-labelledby="revisions-h">
      <h2 id="revisions-h">Revisions</h2>
      <label>
        Compare revision{" "}
        <select value={shown} onChange={(e) => setShown(Number(e.target.value))}>
          {r.revisions.map((x) => (
            <option key={x.number} value={x.number}>
              {x.number}
            </option>
          ))}
        </select>{" "}
        with the one before
      </label>
      {v && (v.diff ? <pre className="diff">{v.diff}</pre> : <p className="muted">The first revision: nothing to compare.</p>)}
    </section>
  );
}

function Reviews({ r, onReviewed }: { r: Detail; onReviewed: () => void }) {
  return (
    <section aria-labelledby="reviews-h">
      <h2 id="reviews-h">Reviews</h2>
      {r.reviews.length === 0 ? (
        <p className="muted">No reviews yet.</p>
      ) : (
        <ol className="timeline">
          {r.reviews.map((v) => (
            <li key={v.id} className={v.voided_at ? "voided" : undefined}>
              <strong>{v.reviewer_name}</strong>{" "}
              {v.decision === "approve" ? "approved" : v.decision === "reject" ? "rejected" : "asked for changes to"} revision {v.revision},{" "}
              <When at={v.created_at} />
              {v.voided_at && <span className="muted"> (no longer counts: the request changed)</span>}
              {v.comment && <blockquote>{v.comment}</blockquote>}
            </li>
          ))}
        </ol>
      )}
      <ReviewForm r={r} onReviewed={onReviewed} />
    </section>
  );
}

function ReviewForm({ r, onReviewed }: { r: Detail; onReviewed: () => void }) {
  const [decision, setDecision] = useState<string>("approve");
  const [comment, setComment] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  if (!r.can_review) {
    return r.review_blocked_reason ? <p className="note">You cannot review this request: {r.review_blocked_reason}</p> : null;
  }
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api("POST", `/api/v1/requests/${r.id}/reviews`, { decision, comment, revision_hash: r.revision_hash });
      setComment("");
      onReviewed();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="form" onSubmit={submit} aria-label="Review">
      <fieldset>
        <legend>Your decision on revision {r.revision}</legend>
        {DECISIONS.map((d) => (
          <label key={d.value} className="inline">
            <input type="radio" name="decision" value={d.value} checked={decision === d.value} onChange={() => setDecision(d.value)} />
            {d.label}
          </label>
        ))}
      </fieldset>
      <label>
        Comment{decision === "approve" ? " (optional)" : " (required: say why)"}
        <textarea value={comment} maxLength={5000} onChange={(e) => setComment(e.target.value)} rows={3} />
      </label>
      <ErrorNote error={error} />
      <button type="submit" disabled={busy}>Submit review</button>
    </form>
  );
}

function ExecutionPanel({ loaded, now, running }: { loaded: Loaded<Execution>; now: number; running: boolean }) {
  const { data: e, error } = loaded;
  if (error) return <ErrorNote error={error} />;
  if (!e) return <Loading what="the execution" />;
  const elapsed = e.duration_ms ?? Math.max(0, now - new Date(e.started_at).getTime());
  return (
    <section aria-labelledby="exec-h">
      <h2 id="exec-h">Execution</h2>
      <p>
        <StatusBadge status={e.status} /> {running ? "running for" : "took"} {(elapsed / 1000).toFixed(1)} s
      </p>
      {e.error && <ExecutionError error={e.error} />}
      {e.logs.length > 0 && (
        <details open>
          <summary>Logs ({e.logs.length})</summary>
          <ol className="logs">
            {e.logs.map((l, i) => (
              <li key={i} className={`log-${l.level}`}>
                <span className="muted">{l.at_ms} ms</span> <span className="level">{l.level}</span> {l.message}
              </li>
            ))}
          </ol>
        </details>
      )}
      {e.calls.length > 0 && (
        <details>
          <summary>Database calls ({e.calls.length})</summary>
          <ol className="logs">
            {e.calls.map((c) => (
              <li key={c.seq}>
                <span className="muted">#{c.seq}</span> {c.op} {c.target} · {c.duration_ms.toFixed(1)} ms · {c.rows} rows
                {c.error && <span className="error-inline"> · {c.error}</span>}
              </li>
            ))}
          </ol>
        </details>
      )}
      {e.sandbox && <SandboxLine report={e.sandbox} />}
      {!running && <Results execution={e.id} />}
    </section>
  );
}

/** An execution's error, with the script position unless its message already ends with it. */
function ExecutionError({ error }: { error: NonNullable<Execution["error"]> }) {
  const where = error.line ? ` (line ${error.line}${error.column ? `, column ${error.column}` : ""})` : "";
  return (
    <div className="error" role="alert">
      <strong>{error.kind}</strong>: {error.message}
      {error.message.endsWith(where) ? "" : where}
    </div>
  );
}

/**
 * What the script's sandbox child reported: the protections in force and, when it reported an
 * outcome (a child that was stopped did not; executions recorded before CPU was counted have 0),
 * what it used.
 */
function SandboxLine({ report }: { report: Schemas["SandboxReport"] }) {
  const parts = [
    `seccomp ${report.seccomp ? "on" : "off"}`,
    `Landlock ${report.landlock}`,
    `no_new_privs ${report.no_new_privs ? "on" : "off"}`,
  ];
  if (report.peak_memory_bytes > 0) parts.push(`peak memory ${(report.peak_memory_bytes / (1024 * 1024)).toFixed(1)} MiB`);
  if (report.cpu_ms > 0) parts.push(`CPU ${report.cpu_ms >= 10 ? report.cpu_ms.toFixed(0) : report.cpu_ms.toFixed(1)} ms`);
  if (report.logs_truncated) parts.push("logs cut at the limit");
  return <p className="muted sandbox-line">Sandbox: {parts.join(" · ")}</p>;
}
