import { useState } from "react";
import { api, type Schemas } from "../api/client";
import { useAuth } from "../auth";
import { Empty, ErrorNote, Loading, When } from "../components/ui";
import { useApi } from "../data";

type SessionView = Schemas["SessionView"];

/** The caller's signed-in devices: the current one marked; sign one or all others out. */
export function Sessions() {
  const { signOut } = useAuth();
  const { data, error, reload } = useApi<SessionView[]>("/api/v1/auth/sessions");
  const [failed, setFailed] = useState<unknown>(null);
  const end = async (id: string) => {
    setFailed(null);
    try {
      await api("DELETE", `/api/v1/auth/sessions/${id}`);
      reload();
    } catch (e) {
      setFailed(e);
    }
  };
  const endOthers = async () => {
    setFailed(null);
    try {
      for (const s of data ?? []) if (!s.current) await api("DELETE", `/api/v1/auth/sessions/${s.id}`);
      reload();
    } catch (e) {
      setFailed(e);
    }
  };
  return (
    <main>
      <h1>My sessions</h1>
      <ErrorNote error={error ?? failed} />
      {!data && !error && <Loading what="your sessions" />}
      {data && data.length === 0 && <Empty>No session is open.</Empty>}
      {data && data.length > 0 && (
        <>
          <div className="table-wrap">
            <table>
              <thead>
                <tr>
                  <th scope="col">Device</th>
                  <th scope="col">Address</th>
                  <th scope="col">Signed in</th>
                  <th scope="col">Last seen</th>
                  <th scope="col"><span className="sr-only">Action</span></th>
                </tr>
              </thead>
              <tbody>
                {data.map((s) => (
                  <tr key={s.id}>
                    <td>
                      {s.user_agent ?? "Unknown device"}
                      {s.current && <strong> (this device)</strong>}
                    </td>
                    <td>{s.ip ?? "—"}</td>
                    <td><When at={s.created_at} /></td>
                    <td><When at={s.last_seen_at} /></td>
                    <td>
                      {s.current ? (
                        <button type="button" className="secondary" onClick={() => void signOut()}>Sign out</button>
                      ) : (
                        <button type="button" className="secondary" onClick={() => void end(s.id)} aria-label={`Sign out ${s.user_agent ?? "device"} signed in ${new Date(s.created_at).toLocaleString()}`}>
                          Sign out
                        </button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {data.some((s) => !s.current) && (
            <div className="row">
              <button type="button" onClick={() => void endOthers()}>Sign out every other device</button>
            </div>
          )}
        </>
      )}
    </main>
  );
}
