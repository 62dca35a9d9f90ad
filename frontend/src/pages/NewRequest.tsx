import { useEffect, useMemo, useState, type DragEvent, type FormEvent } from "react";
import { ApiError, api, type RequestDetail, type Schemas } from "../api/client";
import { useAuth } from "../auth";
import { Code, type Mark } from "../components/Code";
import { ErrorNote } from "../components/ui";
import { useApi } from "../data";
import { navigate } from "../router";

type Instance = Schemas["InstanceView"];
type Check = Schemas["CheckReport"];
type Plan = Schemas["StatementPlan"];
/** The last syntax check, for the content it was made of: its report, or why it could not run. */
type Checked = { key: string; report: Check } | { key: string; failure: string };

const LIMIT_LABELS: Record<string, string> = {
  wall_ms: "Time in all (ms)",
  db_call_ms: "Per statement or call (ms)",
  memory_mb: "Script memory (MiB)",
  max_calls: "Database calls",
  max_rows: "Rows kept",
  max_result_bytes: "Result bytes kept",
  max_log_bytes: "Log bytes kept",
};

/** Files a request (prefilled from `template` when cloning), or (with `editing`) saves a new
 * revision of one. */
export function NewRequest({ editing, template }: { editing?: RequestDetail; template?: RequestDetail }) {
  const from = editing ?? template;
  const { me } = useAuth();
  const instances = useApi<Schemas["InstancePage"]>("/api/v1/instances?per_page=100").data?.items;
  const allPods = useApi<Schemas["PodPage"]>(me?.user.role === "admin" ? "/api/v1/pods?per_page=100" : null).data?.items;
  const pods = useMemo(() => {
    const mine = [...(me?.home_pod ? [me.home_pod] : []), ...(me?.managed_pods ?? [])];
    const list = mine.length ? mine : (allPods ?? []).map((p) => ({ id: p.id, name: p.name }));
    return list.filter((p, i) => list.findIndex((q) => q.id === p.id) === i);
  }, [me, allPods]);

  // Choices fall back to the first valid option while the lists load or change.
  const [podChoice, setPodId] = useState(from?.pod_id ?? "");
  const [instanceChoice, setInstanceId] = useState(from?.instance_id ?? "");
  const [databaseChoice, setDatabase] = useState(from?.database ?? "");
  const [kind, setKind] = useState<"query" | "script">(from?.kind ?? "query");
  const [mode, setMode] = useState<"read" | "write">(from?.mode ?? "read");
  const [content, setContent] = useState(from?.content ?? "");
  const [justification, setJustification] = useState(from?.justification ?? "");
  const [checked, setChecked] = useState<Checked | null>(null);
  const [plans, setPlans] = useState<Plan[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const podId = pods.some((p) => p.id === podChoice) ? podChoice : (pods[0]?.id ?? "");
  const usable = (instances ?? []).filter((i) => i.allowed_pod_ids.includes(podId));
  const instance: Instance | undefined = usable.find((i) => i.id === instanceChoice) ?? usable[0];
  const instanceId = instance?.id ?? "";
  const databases = useApi<Schemas["DatabaseList"]>(instanceId ? `/api/v1/instances/${instanceId}/databases` : null).data?.databases;
  const database = databases?.includes(databaseChoice) ? databaseChoice : (databases?.[0] ?? "");

  // Check the syntax as the author types (debounced), with the target's parser.
  const engine = instance?.engine;
  const checkKey = JSON.stringify([kind, engine, content]);
  useEffect(() => {
    if (!engine || !content.trim()) return;
    const t = window.setTimeout(() => {
      api<Check>("POST", "/api/v1/requests/check", { kind, engine, content }).then(
        (report) => setChecked({ key: checkKey, report }),
        (e: unknown) => setChecked({ key: checkKey, failure: checkFailure(e) }),
      );
    }, 400);
    return () => window.clearTimeout(t);
  }, [content, kind, engine, checkKey]);
  const current = checked?.key === checkKey ? checked : null;
  const check = current && "report" in current ? current.report : null;
  const checkFailed = current && "failure" in current ? current.failure : null;
  const marks = useMemo<Mark[]>(
    () => (check?.errors ?? []).flatMap((e) => (e.line ? [{ line: e.line, message: e.message }] : [])),
    [check],
  );

  const scriptLike = kind === "script" || engine === "mongodb";
  const openFile = async (file: File | undefined) => {
    if (!file) return;
    if (file.size > 256 * 1024) {
      setError(new Error(`${file.name} is larger than the 256 KiB a request may hold.`));
      return;
    }
    setContent(await file.text());
    if (file.name.endsWith(".js")) setKind("script");
    if (file.name.endsWith(".sql")) setKind("query");
  };
  const drop = (e: DragEvent) => {
    e.preventDefault();
    void openFile(e.dataTransfer.files[0]);
  };

  const explain = async () => {
    setError(null);
    setPlans(null);
    try {
      setPlans((await api<Schemas["ExplainResponse"]>("POST", "/api/v1/requests/explain", { instance_id: instanceId, database, content })).plans);
    } catch (e) {
      setError(e);
    }
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const saved = editing
        ? await api<RequestDetail>("PATCH", `/api/v1/requests/${editing.id}`, { instance_id: instanceId, database, kind, mode, content, justification })
        : await api<RequestDetail>("POST", "/api/v1/requests", { pod_id: podId, instance_id: instanceId, database, kind, mode, content, justification });
      navigate(`/requests/${saved.id}`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main>
      <h1>{editing ? `Edit request (revision ${editing.revision + 1})` : "New request"}</h1>
      {template && <p className="note">A copy of an earlier request: change what you need and submit it for review.</p>}
      <form className="form" onSubmit={submit}>
        <div className="filters">
          <label>
            POD
            <select value={podId} onChange={(e) => setPodId(e.target.value)} disabled={!!editing} required>
              {pods.map((p) => <option key={p.id} value={p.id}>{p.name}</option>)}
            </select>
          </label>
          <label>
            Instance
            <select value={instanceId} onChange={(e) => setInstanceId(e.target.value)} required>
              {usable.length === 0 && <option value="">No instance is open to this POD</option>}
              {usable.map((i) => <option key={i.id} value={i.id}>{i.name} ({i.engine}, {i.environment})</option>)}
            </select>
          </label>
          <label>
            Database
            <select value={database} onChange={(e) => setDatabase(e.target.value)} required>
              {(databases ?? []).map((d) => <option key={d} value={d}>{d}</option>)}
            </select>
          </label>
          <label>
            Kind
            <select value={kind} onChange={(e) => setKind(e.target.value as "query" | "script")}>
              <option value="query">{engine === "mongodb" ? "Query (mongosh expression)" : "Query (SQL)"}</option>
              <option value="script">Script (JavaScript)</option>
            </select>
          </label>
          <label>
            Mode
            <select value={mode} onChange={(e) => setMode(e.target.value as "read" | "write")}>
              <option value="read">Read</option>
              <option value="write">Write</option>
            </select>
          </label>
        </div>
        <div onDragOver={(e) => e.preventDefault()} onDrop={drop}>
          <div className="row">
            <span className="muted">Write it here, drop a .sql or .js file, or</span>
            <label className="inline">
              <span className="secondary-like">open a file</span>
              <input type="file" accept=".sql,.js,.txt" onChange={(e) => void openFile(e.target.files?.[0])} />
            </label>
          </div>
          <Code value={content} language={scriptLike ? "javascript" : "sql"} onChange={setContent} marked={marks} label="Request content" />
        </div>
        <CheckSummary check={check} failure={checkFailed} />
        {!scriptLike && (
          <div className="row">
            <button type="button" className="secondary" onClick={() => void explain()} disabled={!content.trim() || !instanceId}>
              EXPLAIN
            </button>
          </div>
        )}
        {plans && (
          <section aria-label="Plans">
            {plans.map((p) => (
              <details key={p.index} open>
                <summary>Statement {p.index + 1}</summary>
                <pre className="plan">{p.plan}</pre>
              </details>
            ))}
          </section>
        )}
        <label>
          Justification: why, and what it changes
          <textarea value={justification} onChange={(e) => setJustification(e.target.value)} rows={3} minLength={10} maxLength={5000} required />
        </label>
        {instance && (
          <section aria-label="Limits">
            <h2>Limits that will apply</h2>
            <dl className="meta">
              {Object.entries(instance.effective_limits as Record<string, number>).map(([k, v]) => (
                <div key={k} className="contents">
                  <dt>{LIMIT_LABELS[k] ?? k}</dt>
                  <dd>{v.toLocaleString()}</dd>
                </div>
              ))}
              <dt>Approvals needed</dt>
              <dd>{instance.required_approvals}</dd>
            </dl>
          </section>
        )}
        <ErrorNote error={error} />
        <div className="row">
          <button type="submit" disabled={busy || !instanceId}>{editing ? "Save revision" : "Submit for review"}</button>
        </div>
      </form>
    </main>
  );
}

/** Why the syntax check could not run, in the author's terms. */
function checkFailure(e: unknown): string {
  if (e instanceof ApiError && e.code === "sandbox_unavailable") {
    return "Scripts cannot be checked or run right now: the portal's script sandbox is not available (an admin finds why in the portal's log).";
  }
  return `The syntax could not be checked: ${e instanceof Error ? e.message : String(e)}`;
}

function CheckSummary({ check, failure }: { check: Check | null; failure: string | null }) {
  if (failure) {
    return <p className="error" role="alert">{failure}</p>;
  }
  if (!check) return null;
  if (check.ok) {
    return <p className="ok" role="status">Syntax OK ({check.parser}).</p>;
  }
  return (
    <ul className="error" role="status" aria-label="Syntax errors">
      {check.errors.map((e, i) => (
        <li key={i}>{e.line ? `Line ${e.line}, column ${e.column ?? 1}: ` : ""}{e.message}</li>
      ))}
    </ul>
  );
}
