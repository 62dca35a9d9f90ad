import { useState, type FormEvent } from "react";
import { api, type Schemas } from "../api/client";
import { Empty, ErrorNote, Loading, When } from "../components/ui";
import { useApi } from "../data";

type Instance = Schemas["InstanceView"];
type Engine = Schemas["Engine"];
type Limits = Schemas["LimitOverrides"];
const LIMITS: [keyof Limits, string][] = [
  ["wall_ms", "Time in all (ms)"],
  ["db_call_ms", "Per statement or call (ms)"],
  ["memory_mb", "Script memory (MiB)"],
  ["max_calls", "Database calls"],
  ["max_rows", "Rows kept"],
  ["max_result_bytes", "Result bytes kept"],
  ["max_log_bytes", "Log bytes kept"],
];
const TLS = ["disable", "prefer", "require", "verify-ca", "verify-full"] as const;

/** Admins: the databases requests run against, their connection, PODs, approvals and limits. */
export function AdminInstances() {
  const { data, error, reload } = useApi<Schemas["InstancePage"]>("/api/v1/instances?per_page=100");
  const pods = useApi<Schemas["PodPage"]>("/api/v1/pods?per_page=100").data?.items ?? [];
  const [editing, setEditing] = useState<string | "new" | null>(null);
  const current = data?.items.find((i) => i.id === editing);
  return (
    <main>
      <h1>Instances</h1>
      <div className="row">
        <button type="button" onClick={() => setEditing(editing === "new" ? null : "new")} aria-expanded={editing === "new"}>
          New instance
        </button>
      </div>
      {editing === "new" && <InstanceForm key="new" pods={pods} onSaved={() => { setEditing(null); reload(); }} />}
      <ErrorNote error={error} />
      {!data && !error && <Loading what="instances" />}
      {data && data.items.length === 0 && <Empty>No instance is registered yet.</Empty>}
      {data && data.items.length > 0 && (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Instance</th>
                <th scope="col">Connection</th>
                <th scope="col">PODs</th>
                <th scope="col">Reviews</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {data.items.map((i) => (
                <InstanceRow key={i.id} instance={i} pods={pods} onEdit={() => setEditing(editing === i.id ? null : i.id)} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {current && <InstanceForm key={current.id} instance={current} pods={pods} onSaved={() => { setEditing(null); reload(); }} />}
    </main>
  );
}

function InstanceRow({ instance: i, pods, onEdit }: { instance: Instance; pods: Schemas["PodPage"]["items"]; onEdit: () => void }) {
  const [note, setNote] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const c = i.connection;
  const where = c ? c.path ?? c.uri ?? `${c.user ?? ""}@${c.host ?? ""}:${c.port ?? ""}` : "—";
  const test = async () => {
    setError(null);
    setNote("Testing…");
    try {
      const r = await api<Schemas["TestResult"]>("POST", `/api/v1/instances/${i.id}/test`);
      setNote(r.ok ? `Reachable: ${r.server_version ?? "ok"} in ${r.latency_ms?.toFixed(0) ?? "?"} ms` : `Unreachable: ${r.error ?? "no answer"}`);
    } catch (e) {
      setNote(null);
      setError(e);
    }
  };
  const sync = async () => {
    setError(null);
    try {
      const r = await api<Schemas["DatabaseList"]>("POST", `/api/v1/instances/${i.id}/databases/sync`);
      setNote(`Databases: ${r.databases.join(", ") || "none"}`);
    } catch (e) {
      setError(e);
    }
  };
  return (
    <tr>
      <td>
        {i.name}
        <div className="muted">{i.engine} · {i.environment}</div>
      </td>
      <td>
        {where}
        <div className="muted">databases synced <When at={i.databases_synced_at} /></div>
      </td>
      <td>{i.allowed_pod_ids.map((id) => pods.find((p) => p.id === id)?.name ?? id).join(", ") || "none"}</td>
      <td>
        {i.required_approvals} {i.required_approvals === 1 ? "approval" : "approvals"}, {i.run_mode === "manual" ? "author runs" : "runs on approval"}
        <div className="muted">{i.slack_approval ? "Slack approvals allowed" : "portal approvals only"}</div>
      </td>
      <td>
        <div className="actions">
          <button type="button" className="secondary" onClick={() => void test()}>Test connection</button>
          <button type="button" className="secondary" onClick={() => void sync()}>Sync databases</button>
          <button type="button" className="secondary" onClick={onEdit}>Edit {i.name}</button>
          {note && <span role="status">{note}</span>}
          <ErrorNote error={error} />
        </div>
      </td>
    </tr>
  );
}

function InstanceForm({ instance, pods, onSaved }: { instance?: Instance; pods: Schemas["PodPage"]["items"]; onSaved: () => void }) {
  const c = instance?.connection;
  const [name, setName] = useState(instance?.name ?? "");
  const [engine, setEngine] = useState<Engine>(instance?.engine ?? "postgres");
  const [environment, setEnvironment] = useState(instance?.environment ?? "production");
  const [host, setHost] = useState(c?.host ?? "");
  const [port, setPort] = useState(c?.port ? String(c.port) : "");
  const [user, setUser] = useState(c?.user ?? "");
  const [tls, setTls] = useState<string>(c?.tls ?? "prefer");
  const [uri, setUri] = useState(c?.uri ?? "");
  const [path, setPath] = useState(c?.path ?? "");
  const [secret, setSecret] = useState("");
  const [allowed, setAllowed] = useState<string[]>(instance?.allowed_pod_ids ?? []);
  const [approvals, setApprovals] = useState(String(instance?.required_approvals ?? 1));
  const [runMode, setRunMode] = useState<string>(instance?.run_mode ?? "on_approval");
  const [slack, setSlack] = useState(instance?.slack_approval ?? true);
  const [limits, setLimits] = useState<Record<string, string>>(
    Object.fromEntries(LIMITS.map(([k]) => [k, instance?.limits[k] != null ? String(instance.limits[k]) : ""])),
  );
  const [error, setError] = useState<unknown>(null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    const num = (v: string) => (v.trim() === "" ? null : Number(v));
    const body: Record<string, unknown> = {
      name,
      environment,
      allowed_pod_ids: allowed,
      required_approvals: num(approvals),
      run_mode: runMode,
      slack_approval: slack,
      limits: Object.fromEntries(LIMITS.map(([k]) => [k, num(limits[k] ?? "")])),
    };
    if (engine === "sqlite") body.path = path;
    else if (engine === "mongodb" && uri.trim()) body.uri = uri;
    else Object.assign(body, { host, port: num(port), user: user || null, tls });
    if (secret) body.secret = secret;
    try {
      if (instance) await api("PATCH", `/api/v1/instances/${instance.id}`, body);
      else await api("POST", "/api/v1/instances", { ...body, engine });
      onSaved();
    } catch (err) {
      setError(err);
    }
  };
  const toggle = (id: string) => setAllowed(allowed.includes(id) ? allowed.filter((a) => a !== id) : [...allowed, id]);

  return (
    <section className="panel" aria-label={instance ? `Edit ${instance.name}` : "New instance"}>
      <h2>{instance ? `Edit ${instance.name}` : "New instance"}</h2>
      <form className="form" onSubmit={submit}>
        <div className="filters">
          <label>Name<input required value={name} onChange={(e) => setName(e.target.value)} /></label>
          <label>
            Engine
            <select value={engine} onChange={(e) => setEngine(e.target.value as Engine)} disabled={!!instance}>
              <option value="postgres">PostgreSQL</option>
              <option value="mongodb">MongoDB</option>
              <option value="sqlite">SQLite</option>
            </select>
          </label>
          <label>Environment<input required value={environment} onChange={(e) => setEnvironment(e.target.value)} /></label>
        </div>
        {engine === "sqlite" ? (
          <label>File (inside the data directory)<input required value={path} onChange={(e) => setPath(e.target.value)} /></label>
        ) : (
          <div className="filters">
            {engine === "mongodb" && (
              <label>URI (no password; or host and port below)<input value={uri} placeholder="mongodb://db1,db2/?replicaSet=rs0" onChange={(e) => setUri(e.target.value)} /></label>
            )}
            <label>Host<input value={host} onChange={(e) => setHost(e.target.value)} /></label>
            <label>Port<input inputMode="numeric" value={port} onChange={(e) => setPort(e.target.value)} /></label>
            <label>User<input value={user} autoComplete="off" onChange={(e) => setUser(e.target.value)} /></label>
            <label>
              TLS
              <select value={tls} onChange={(e) => setTls(e.target.value)}>
                {TLS.map((t) => <option key={t} value={t}>{t}</option>)}
              </select>
            </label>
            <label>
              Password{c?.has_secret ? " (set; type to replace)" : ""}
              <input type="password" autoComplete="new-password" value={secret} onChange={(e) => setSecret(e.target.value)} />
            </label>
          </div>
        )}
        <fieldset>
          <legend>PODs that may use it</legend>
          {pods.map((p) => (
            <label key={p.id} className="inline">
              <input type="checkbox" checked={allowed.includes(p.id)} onChange={() => toggle(p.id)} />
              {p.name}
            </label>
          ))}
        </fieldset>
        <div className="filters">
          <label>Approvals required<input inputMode="numeric" value={approvals} onChange={(e) => setApprovals(e.target.value)} /></label>
          <label>
            Runs
            <select value={runMode} onChange={(e) => setRunMode(e.target.value)}>
              <option value="on_approval">when approved</option>
              <option value="manual">when the author presses Run</option>
            </select>
          </label>
          <label className="inline">
            <input type="checkbox" checked={slack} onChange={(e) => setSlack(e.target.checked)} />
            Allow approving from Slack
          </label>
        </div>
        <fieldset>
          <legend>Limits (empty: the portal's default)</legend>
          <div className="filters">
            {LIMITS.map(([k, label]) => (
              <label key={k}>
                {label}
                <input inputMode="numeric" value={limits[k] ?? ""} onChange={(e) => setLimits({ ...limits, [k]: e.target.value })} />
              </label>
            ))}
          </div>
        </fieldset>
        <ErrorNote error={error} />
        <button type="submit">{instance ? "Save" : "Create instance"}</button>
      </form>
    </section>
  );
}
