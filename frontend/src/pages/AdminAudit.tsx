import { useState } from "react";
import { api, type Schemas } from "../api/client";
import { Empty, ErrorNote, Loading, Pager, When } from "../components/ui";
import { useApi } from "../data";

const PER_PAGE = 50;
type Verdict = Schemas["ChainVerdict"];

/** Admins: the hash-chained audit log, filtered, with a check of the whole chain. */
export function AdminAudit() {
  const [action, setAction] = useState("");
  const [target, setTarget] = useState("");
  const [since, setSince] = useState("");
  const [until, setUntil] = useState("");
  const [page, setPage] = useState(1);
  const params = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
  if (action.trim()) params.set("action", action.trim());
  if (target.trim()) params.set("target", target.trim());
  if (since) params.set("since", new Date(since).toISOString());
  if (until) params.set("until", new Date(until).toISOString());
  const { data, error } = useApi<Schemas["AuditPage"]>(`/api/v1/audit?${params.toString()}`);
  const [verdict, setVerdict] = useState<Verdict | null>(null);
  const [checking, setChecking] = useState(false);
  const [failed, setFailed] = useState<unknown>(null);
  const verify = async () => {
    setChecking(true);
    setFailed(null);
    try {
      setVerdict(await api<Verdict>("GET", "/api/v1/audit/verify"));
    } catch (e) {
      setFailed(e);
    } finally {
      setChecking(false);
    }
  };
  const pages = data ? Math.max(1, Math.ceil(data.total / PER_PAGE)) : 1;
  const reset = () => setPage(1);

  return (
    <main>
      <h1>Audit log</h1>
      <div className="row">
        <button type="button" className="secondary" onClick={() => void verify()} disabled={checking}>
          {checking ? "Checking the chain…" : "Verify the chain"}
        </button>
        {verdict && (
          <span role="status" className={verdict.intact ? "ok" : "error"}>
            {verdict.intact
              ? `Intact: all ${verdict.events} events link and match their hashes.`
              : `Broken at event ${verdict.broken?.seq ?? "?"} (${verdict.broken?.reason ?? "unknown"}); ${verdict.events} events before it verified.`}
          </span>
        )}
      </div>
      <ErrorNote error={failed} />
      <div className="filters">
        <label>Action<input value={action} onChange={(e) => { setAction(e.target.value); reset(); }} placeholder="e.g. request.reviewed" /></label>
        <label>Target id<input value={target} onChange={(e) => { setTarget(e.target.value); reset(); }} /></label>
        <label>Since<input type="datetime-local" value={since} onChange={(e) => { setSince(e.target.value); reset(); }} /></label>
        <label>Until<input type="datetime-local" value={until} onChange={(e) => { setUntil(e.target.value); reset(); }} /></label>
        {data && <span className="count">{data.total} events</span>}
      </div>
      <ErrorNote error={error} />
      {!data && !error && <Loading what="the audit log" />}
      {data && data.items.length === 0 && <Empty>No event matches these filters.</Empty>}
      {data && data.items.length > 0 && (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">When</th>
                <th scope="col">Action</th>
                <th scope="col">Target</th>
                <th scope="col">Origin</th>
                <th scope="col">Details</th>
              </tr>
            </thead>
            <tbody>
              {data.items.map((e) => (
                <tr key={e.id}>
                  <td>{e.seq}</td>
                  <td><When at={e.at} /></td>
                  <td>{e.action}</td>
                  <td>{e.target_type ? `${e.target_type} ${e.target_id ?? ""}` : "—"}</td>
                  <td>{e.ip ?? "—"}<div className="muted">{e.user_agent ?? ""}</div></td>
                  <td><code className="details">{JSON.stringify(e.details)}</code></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager page={page} pages={pages} onPage={setPage} />
    </main>
  );
}
