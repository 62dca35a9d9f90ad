import { Suspense, lazy, useEffect } from "react";
import type { RequestDetail as Detail, RequestPage } from "./api/client";
import { AuthProvider, useAuth } from "./auth";
import { ErrorNote, Loading } from "./components/ui";
import { useApi } from "./data";
import { AdminAudit } from "./pages/AdminAudit";
import { AdminInstances } from "./pages/AdminInstances";
import { AdminPods } from "./pages/AdminPods";
import { AdminUsers } from "./pages/AdminUsers";
import { ChangePassword } from "./pages/ChangePassword";
import { RequestList } from "./pages/RequestList";
import { Sessions } from "./pages/Sessions";
import { SignIn } from "./pages/SignIn";
import { Link, match, navigate, useLocation } from "./router";

// The editor (CodeMirror) is most of the code: the pages that use it load on demand.
const NewRequest = lazy(() => import("./pages/NewRequest").then((m) => ({ default: m.NewRequest })));
const RequestDetail = lazy(() => import("./pages/RequestDetail").then((m) => ({ default: m.RequestDetail })));

export function App() {
  return (
    <AuthProvider>
      <Shell />
    </AuthProvider>
  );
}

function Shell() {
  const { me } = useAuth();
  const location = useLocation();
  if (me === undefined) return <Loading what="your session" />;
  if (me === null) return <SignIn />;
  if (me.user.must_change_password) return <ChangePassword forced />;
  const path = location.pathname;
  if (path === "/" || path === "/signin") {
    navigate("/requests", true);
    return null;
  }
  return (
    <>
      <Nav path={path} />
      <Suspense fallback={<Loading what="the page" />}>
        <Page path={path} />
      </Suspense>
    </>
  );
}

function Page({ path }: { path: string }) {
  if (path === "/requests") return <RequestList inbox={false} />;
  if (path === "/inbox") return <RequestList inbox />;
  if (path === "/requests/new") {
    const from = new URL(window.location.href).searchParams.get("from");
    return from ? <CloneRequest key={from} id={from} /> : <NewRequest />;
  }
  if (path === "/account/password") return <ChangePassword forced={false} />;
  if (path === "/account/sessions") return <Sessions />;
  if (path === "/admin/users") return <AdminUsers />;
  if (path === "/admin/pods") return <AdminPods />;
  if (path === "/admin/instances") return <AdminInstances />;
  if (path === "/admin/audit") return <AdminAudit />;
  const edit = match("/requests/:id/edit", path);
  if (edit?.id) return <EditRequest key={edit.id} id={edit.id} />;
  const detail = match("/requests/:id", path);
  if (detail?.id) return <RequestDetail key={detail.id} id={detail.id} />;
  return (
    <main>
      <h1>Page not found</h1>
      <p>
        There is no page at {path}. <Link href="/requests">Go to your requests</Link>.
      </p>
    </main>
  );
}

function EditRequest({ id }: { id: string }) {
  const { data, error } = useApi<Detail>(`/api/v1/requests/${id}`);
  if (error) return <main><ErrorNote error={error} /></main>;
  if (!data) return <Loading what="the request" />;
  return <NewRequest editing={data} />;
}

function CloneRequest({ id }: { id: string }) {
  const { data, error } = useApi<Detail>(`/api/v1/requests/${id}`);
  if (error) return <main><ErrorNote error={error} /></main>;
  if (!data) return <Loading what="the request to copy" />;
  return <NewRequest template={data} />;
}

function Nav({ path }: { path: string }) {
  const { me, signOut } = useAuth();
  const reviewer = me?.user.role !== "developer";
  const { data: inbox, reload } = useApi<RequestPage>(reviewer ? "/api/v1/requests?awaiting_review=me&per_page=1" : null);
  // Count again on every page change (a review just made leaves the inbox).
  useEffect(reload, [path, reload]);
  const current = (href: string) => (path === href ? "page" : undefined);
  return (
    <header className="nav">
      <span className="brand">Quorum</span>
      <nav aria-label="Main">
        <Link href="/requests/new" aria-current={current("/requests/new")}>New request</Link>
        <Link href="/requests" aria-current={current("/requests")}>My requests</Link>
        {reviewer && (
          <Link href="/inbox" aria-current={current("/inbox")}>
            Approvals{inbox && inbox.total > 0 ? <span className="pill" aria-label={`${inbox.total} awaiting you`}>{inbox.total}</span> : null}
          </Link>
        )}
        {me?.user.role === "admin" && (
          <>
            <Link href="/admin/users" aria-current={current("/admin/users")}>Users</Link>
            <Link href="/admin/pods" aria-current={current("/admin/pods")}>PODs</Link>
            <Link href="/admin/instances" aria-current={current("/admin/instances")}>Instances</Link>
            <Link href="/admin/audit" aria-current={current("/admin/audit")}>Audit</Link>
          </>
        )}
        <Link href="/account/sessions" aria-current={current("/account/sessions")}>Sessions</Link>
        <Link href="/account/password" aria-current={current("/account/password")}>Password</Link>
      </nav>
      <span className="who">{me?.user.name}</span>
      <button type="button" className="secondary" onClick={() => void signOut()}>Sign out</button>
    </header>
  );
}
