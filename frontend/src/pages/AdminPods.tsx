import { useState, type FormEvent } from "react";
import { api, type Schemas } from "../api/client";
import { Empty, ErrorNote, Loading } from "../components/ui";
import { useApi } from "../data";

type Pod = Schemas["PodPage"]["items"][number];
type PodDetail = Schemas["PodDetail"];

/** Admins: PODs, their Slack channels and their managers. */
export function AdminPods() {
  const { data, error, reload } = useApi<Schemas["PodPage"]>("/api/v1/pods?per_page=100");
  const [open, setOpen] = useState<string | null>(null);
  return (
    <main>
      <h1>PODs</h1>
      <NewPod onCreated={reload} />
      <ErrorNote error={error} />
      {!data && !error && <Loading what="PODs" />}
      {data && data.items.length === 0 && <Empty>No POD yet.</Empty>}
      {data && data.items.length > 0 && (
        <div className="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">POD</th>
                <th scope="col">Slack channel</th>
                <th scope="col">People</th>
                <th scope="col"><span className="sr-only">Action</span></th>
              </tr>
            </thead>
            <tbody>
              {data.items.map((p) => (
                <tr key={p.id}>
                  <td>{p.name}</td>
                  <td>{p.slack_channel ?? <span className="muted">default channel</span>}</td>
                  <td>{p.manager_count} managers, {p.member_count} members</td>
                  <td>
                    <button type="button" className="secondary" onClick={() => setOpen(open === p.id ? null : p.id)} aria-expanded={open === p.id}>
                      {open === p.id ? "Close" : `Edit ${p.name}`}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {open && data?.items.find((p) => p.id === open) && (
        <EditPod key={open} pod={data.items.find((p) => p.id === open) as Pod} onSaved={reload} />
      )}
    </main>
  );
}

function NewPod({ onCreated }: { onCreated: () => void }) {
  const [name, setName] = useState("");
  const [channel, setChannel] = useState("");
  const [error, setError] = useState<unknown>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      await api("POST", "/api/v1/pods", { name, slack_channel: channel.trim() || null });
      setName("");
      setChannel("");
      onCreated();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <details className="panel">
      <summary>New POD</summary>
      <form className="form" onSubmit={submit}>
        <label>Name<input required value={name} onChange={(e) => setName(e.target.value)} /></label>
        <label>Slack channel (optional)<input value={channel} placeholder="#payments-approvals" onChange={(e) => setChannel(e.target.value)} /></label>
        <ErrorNote error={error} />
        <button type="submit">Create POD</button>
      </form>
    </details>
  );
}

function EditPod({ pod, onSaved }: { pod: Pod; onSaved: () => void }) {
  const detail = useApi<PodDetail>(`/api/v1/pods/${pod.id}`);
  const users = useApi<Schemas["UserPage"]>("/api/v1/users?per_page=100&role=manager").data?.items ?? [];
  const [channel, setChannel] = useState(pod.slack_channel ?? "");
  const [chosen, setChosen] = useState<string[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  const managers = chosen ?? (detail.data?.managers ?? []).map((m) => m.id);
  const toggle = (id: string) => setChosen(managers.includes(id) ? managers.filter((m) => m !== id) : [...managers, id]);
  const save = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    setSaved(false);
    try {
      await api("PATCH", `/api/v1/pods/${pod.id}`, { slack_channel: channel.trim() || null });
      await api("PUT", `/api/v1/pods/${pod.id}/managers`, { user_ids: managers });
      setSaved(true);
      onSaved();
    } catch (err) {
      setError(err);
    }
  };
  if (!detail.data && !detail.error) return <Loading what={`${pod.name}'s managers`} />;
  return (
    <section className="panel" aria-label={`Edit ${pod.name}`}>
      <h2>{pod.name}</h2>
      <form className="form" onSubmit={save}>
        <label>Slack channel<input value={channel} placeholder="empty: the default channel" onChange={(e) => setChannel(e.target.value)} /></label>
        <fieldset>
          <legend>Managers (they review this POD's requests)</legend>
          {users.length === 0 && <p className="muted">No user has the manager role yet.</p>}
          {users.map((u) => (
            <label key={u.id} className="inline">
              <input type="checkbox" checked={managers.includes(u.id)} onChange={() => toggle(u.id)} />
              {u.name} ({u.email})
            </label>
          ))}
        </fieldset>
        <ErrorNote error={error ?? detail.error} />
        {saved && <p role="status">Saved.</p>}
        <button type="submit">Save</button>
      </form>
    </section>
  );
}
