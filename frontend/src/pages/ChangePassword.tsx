import { useState, type FormEvent } from "react";
import { api } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote } from "../components/ui";

/** Also the forced step at first sign-in, when an admin set the password. */
export function ChangePassword({ forced }: { forced: boolean }) {
  const { reload, signOut } = useAuth();
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [repeat, setRepeat] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    if (next !== repeat) {
      setError(new Error("The two new passwords differ."));
      return;
    }
    setBusy(true);
    try {
      await api("POST", "/api/v1/me/password", { current_password: current, new_password: next });
      setDone(true);
      setCurrent("");
      setNext("");
      setRepeat("");
      await reload();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="narrow">
      <h1>{forced ? "Choose your own password" : "Change password"}</h1>
      {forced && <p>An administrator set your password. Choose a new one before you continue.</p>}
      <form onSubmit={submit} className="form">
        <label>
          Current password
          <input type="password" autoComplete="current-password" required value={current} onChange={(e) => setCurrent(e.target.value)} />
        </label>
        <label>
          New password
          <input type="password" autoComplete="new-password" required minLength={12} value={next} onChange={(e) => setNext(e.target.value)} />
        </label>
        <label>
          Repeat the new password
          <input type="password" autoComplete="new-password" required value={repeat} onChange={(e) => setRepeat(e.target.value)} />
        </label>
        <ErrorNote error={error} />
        {done && <p role="status">Password changed.</p>}
        <div className="row">
          <button type="submit" disabled={busy}>
            Change password
          </button>
          {forced && (
            <button type="button" className="secondary" onClick={() => void signOut()}>
              Sign out
            </button>
          )}
        </div>
      </form>
    </main>
  );
}
