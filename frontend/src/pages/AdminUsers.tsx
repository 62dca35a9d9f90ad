import { useState, type FormEvent } from "react";
import { api, type Schemas } from "../api/client";
import { Empty, ErrorNote, Loading, Pager, When } from "../components/ui";
import { useApi } from "../data";

type User = Schemas["UserView"];
type Created = Schemas["UserDetail"];
const ROLES = ["developer", "manager", "admin"] as const;
const PER_PAGE = 50;

/** Admins: create users, change their role and home POD, disable, unlock, reset passwords. */
export function AdminUsers() {
  const [q, setQ] = useState("");
  const [page, setPage] = useState(1);
  const params = new URLSearchParams({ page: String(page), per_page: String(PER_PAGE) });
  if (q.trim()) params.set("q", q.trim());
  const { data, error, reload } = useApi<Schemas["UserPage"]>(`/api/v1/users?${params.toString()}`);
  const pods = useApi<Schemas["PodPage"]>("/api/v1/pods?per_page=100").data?.items ?? [];
  const [note, setNote] = useState<string | null>(null);
  const [failed, setFailed] = useState<unknown>(null);

  const change = async (u: User, patch: Record<string, unknown>, done: string) => {
    setFailed(null);
    setNote(null);
    try {
      const r = await api<Created>("PATCH", `/api/v1/users/${u.id}`, patch);
      setNote(r.initial_password ? `${done} New initial password for ${u.email}: ${r.initial_password}` : done);
      reload();
    } catch (e) {
      setFailed(e);
    }
  };
  const unlock = async (u: User) => {
    setFailed(null);
    try {
      await api("POST", `/api/v1/users/${u.id}/unlock`);
      setNote(`${u.email} can sign in again.`);
      reload();
    } catch (e) {
      setFailed(e);
    }
  };
  const pages = data ? Math.max(1, Math.ceil(data.total / PER_PAGE)) : 1;

  return (
    <main>
      <h1>Users</h1>
      <NewUser pods={pods} onCreated={(m) => { setNote(m); reload(); }} />
      <div className="filters">
        <label>
          Search
          <input type="search" value={q} onChange={(e) => { setQ(e.target.value); setPage(1); }} placeholder="email or name" />
        </label>
        {data && <span className="count">{data.total} users</span>}
      </div>
      {note && <p className="note" role="status">{note}</p>}
      <ErrorNote error={error ?? failed} />
      {!data && !error && <Loading what="users" />}
      {data && data.items.length === 0 && <Empty>No user matches.</Empty>}
      {data && data.items.length > 0 && (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">User</th>
                <th scope="col">Role</th>
                <th scope="col">Home POD</th>
                <th scope="col">Status</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {data.items.map((u) => (
                <tr key={u.id}>
                  <td>{u.name}<div className="muted">{u.email}</div></td>
                  <td>
                    <select aria-label={`Role of ${u.email}`} value={u.role} onChange={(e) => void change(u, { role: e.target.value }, `${u.email} is now ${e.target.value}.`)}>
                      {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
                    </select>
                  </td>
                  <td>
                    <select aria-label={`Home POD of ${u.email}`} value={u.home_pod_id ?? ""} onChange={(e) => void change(u, { home_pod_id: e.target.value || null }, `Home POD of ${u.email} changed.`)}>
                      <option value="">None</option>
                      {pods.map((p) => <option key={p.id} value={p.id}>{p.name}</option>)}
                    </select>
                  </td>
                  <td>
                    {u.disabled ? "Disabled" : u.locked ? "Locked" : "Active"}
                    {u.must_change_password && <div className="muted">must change password</div>}
                    <div className="muted">since <When at={u.created_at} /></div>
                  </td>
                  <td>
                    <div className="actions">
                      <button type="button" className="secondary" onClick={() => void change(u, { disabled: !u.disabled }, `${u.email} ${u.disabled ? "enabled" : "disabled"}.`)}>
                        {u.disabled ? "Enable" : "Disable"}
                      </button>
                      {u.locked && <button type="button" className="secondary" onClick={() => void unlock(u)}>Unlock</button>}
                      <button type="button" className="secondary" onClick={() => void change(u, { reset_password: true }, "Password reset.")}>Reset password</button>
                    </div>
                  </td>
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

function NewUser({ pods, onCreated }: { pods: Schemas["PodPage"]["items"]; onCreated: (message: string) => void }) {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [role, setRole] = useState<string>("developer");
  const [pod, setPod] = useState("");
  const [error, setError] = useState<unknown>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      const r = await api<Created>("POST", "/api/v1/users", { email, name, role, home_pod_id: pod || null });
      onCreated(`Created ${r.user.email}. Initial password (shown once; they must change it at first sign-in): ${r.initial_password ?? "as set"}`);
      setEmail("");
      setName("");
    } catch (err) {
      setError(err);
    }
  };
  return (
    <details className="panel">
      <summary>New user</summary>
      <form className="form" onSubmit={submit}>
        <label>Email<input type="email" required value={email} onChange={(e) => setEmail(e.target.value)} /></label>
        <label>Name<input required value={name} onChange={(e) => setName(e.target.value)} /></label>
        <label>
          Role
          <select value={role} onChange={(e) => setRole(e.target.value)}>
            {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
          </select>
        </label>
        <label>
          Home POD
          <select value={pod} onChange={(e) => setPod(e.target.value)}>
            <option value="">None</option>
            {pods.map((p) => <option key={p.id} value={p.id}>{p.name}</option>)}
          </select>
        </label>
        <ErrorNote error={error} />
        <button type="submit">Create user</button>
      </form>
    </details>
  );
}
