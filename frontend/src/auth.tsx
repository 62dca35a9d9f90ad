// Who is signed in. The access token is kept in memory and refreshed through the HttpOnly
// refresh cookie a minute before it expires, on a 401, and when the page loads.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { ApiError, api, setSession, type Me, type TokenResponse } from "./api/client";

interface AuthState {
  /** undefined while the first refresh is in flight; null when signed out. */
  me: Me | null | undefined;
  signIn: (email: string, password: string) => Promise<void>;
  signOut: () => Promise<void>;
  /** Re-reads the account (after a password change). */
  reload: () => Promise<void>;
}

const AuthContext = createContext<AuthState | null>(null);

export function useAuth(): AuthState {
  const a = useContext(AuthContext);
  if (!a) throw new Error("useAuth outside AuthProvider");
  return a;
}

// The token's life outside React: one timer, one refresh in flight at a time (a rotated
// refresh token presented twice ends the session), and who to tell when the session ended.
let timer: number | undefined;
let inflight: Promise<string | null> | null = null;
let signedOut: () => void = () => undefined;

function adopt(t: TokenResponse) {
  setSession(t.access_token, refresh);
  window.clearTimeout(timer);
  timer = window.setTimeout(() => void refresh(), Math.max(10, t.expires_in - 60) * 1000);
}

function forget() {
  window.clearTimeout(timer);
  setSession(null, refresh);
}

function refresh(): Promise<string | null> {
  inflight ??= (async () => {
    try {
      const t = await api<TokenResponse>("POST", "/api/v1/auth/refresh");
      adopt(t);
      return t.access_token;
    } catch {
      forget();
      signedOut();
      return null;
    } finally {
      inflight = null;
    }
  })();
  return inflight;
}

export function AuthProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Me | null | undefined>(undefined);

  const loadMe = useCallback(async () => {
    setMe(await api<Me>("GET", "/api/v1/me"));
  }, []);

  useEffect(() => {
    signedOut = () => setMe(null);
    setSession(null, refresh);
    void (async () => {
      if (!(await refresh())) return;
      try {
        await loadMe();
      } catch {
        setMe(null);
      }
    })();
    return () => {
      window.clearTimeout(timer);
      signedOut = () => undefined;
    };
  }, [loadMe]);

  const signIn = useCallback(
    async (email: string, password: string) => {
      adopt(await api<TokenResponse>("POST", "/api/v1/auth/login", { email, password }));
      await loadMe();
    },
    [loadMe],
  );

  const signOut = useCallback(async () => {
    try {
      await api("POST", "/api/v1/auth/logout");
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
    }
    forget();
    setMe(null);
  }, []);

  const value = useMemo(() => ({ me, signIn, signOut, reload: loadMe }), [me, signIn, signOut, loadMe]);
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}
