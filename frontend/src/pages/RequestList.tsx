import { useState } from "react";
import type { RequestPage } from "../api/client";
import { useAuth } from "../auth";
import { Empty, ErrorNote, Loading, Pager, StatusBadge, When } from "../components/ui";
import { useApi, useInstanceNames } from "../data";
import { Link } from "../router";

const STATUSES = ["pending", "changes_requested", "approved", "running", "succeeded", "failed", "timed_out", "rejected", "cancelled", "expired", "interrupted"];
const PER_PAGE = 25;

/** "My requests" (`author=me`) or the approvals inbox (`awaiting_review=me`). */
export function RequestList({ inbox }: { inbox: boolean }) {
  const { me } = useAuth();
  const [status, setStatus] = useState("");
  const [q, setQ] = useState("");
  const [page, setPage] = useState(1);
  const params = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
  params.set(inbox ? "awaiting_review" : "author", "me");
  if (status) params.set("status", status);
  if (q.trim()) params.set("q", q.trim());
  const { data, error } = useApi<RequestPage>(`/api/v1/requests?${params.toString()}`);
  const instances = useInstanceNames();
  const pages = data ? Math.max(1, Math.ceil(data.total / PER_PAGE)) : 1;
  const title = inbox ? "Approvals inbox" : "My requests";

  return (
    <main>
      <h1>{title}</h1>
      <div className="filters">
        {!inbox && (
          <label>
            Status
            <select value={status} onChange={(e) => { setStatus(e.target.value); setPage(1); }}>
              <option value="">Any</option>
              {STATUSES.map((s) => (
                <option key={s} value={s}>{s.replace("_", " ")}</option>
              ))}
            </select>
          </label>
        )}
        <label>
          Search
          <input type="search" value={q} placeholder="justification or content" onChange={(e) => { setQ(e.target.value); setPage(1); }} />
        </label>
        {data && <span className="count" aria-live="polite">{data.total} {data.total === 1 ? "request" : "requests"}</span>}
      </div>
      <ErrorNote error={error} />
      {!data && !error && <Loading what="requests" />}
      {data && data.items.length === 0 && (
        <Empty>
          {inbox
            ? "Nothing awaits your review."
            : q || status
              ? "No request matches these filters."
              : <>You have not filed a request yet. <Link href="/requests/new">File one</Link>.</>}
        </Empty>
      )}
      {data && data.items.length > 0 && (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Status</th>
                <th scope="col">Request</th>
                <th scope="col">Target</th>
                <th scope="col">Updated</th>
              </tr>
            </thead>
            <tbody>
              {data.items.map((r) => (
                <tr key={r.id}>
                  <td><StatusBadge status={r.status} /></td>
                  <td>
                    <Link href={`/requests/${r.id}`}>{r.justification}</Link>
                    <div className="muted">
                      {r.mode} {r.kind} · revision {r.revision} · by {r.author_id === me?.user.id ? "you" : r.author_name}
                    </div>
                  </td>
                  <td>{instances.get(r.instance_id) ?? "instance"} / {r.database}</td>
                  <td><When at={r.updated_at} /></td>
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
