//! The route table: every route of the HTTP API is added here, with its methods and the path
//! the OpenAPI document gives it, and nowhere else.
//!
//! axum's `Router` cannot list its routes, so the router is built from this table
//! ([`Routes::into_router`]) and the table is what the tests compare with the OpenAPI document
//! (`crate::openapi`): a route added without its description, or a method the table does not
//! name, fails them. The methods are checked against the router itself (every other method
//! answers `405`), so the table cannot drift from what is served.

use axum::Router;
use axum::routing::MethodRouter;

use crate::AppState;

/// One route: its axum path, its path in the OpenAPI document, and its methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// The path as axum routes it (`/api/chats/{id}`, `/api/topics/{*rest}`).
    pub(crate) path: &'static str,
    /// The path in the OpenAPI document; differs only where axum needs a wildcard
    /// (`/api/topics/{*rest}` is `/api/topics/{topic}/events`: topic names contain `/`).
    pub(crate) doc_path: &'static str,
    /// Upper-case method names (`GET` also answers `HEAD`, as axum does).
    pub(crate) methods: &'static [&'static str],
}

/// A router under construction and its table. Modules return one; [`crate::app`] merges them.
pub(crate) struct Routes {
    router: Router<AppState>,
    table: Vec<Route>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("table", &self.table)
            .finish()
    }
}

impl Routes {
    pub(crate) fn new() -> Self {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Adds `path` answering `methods` with `handler`; the OpenAPI document names it `path`.
    pub(crate) fn route(
        self,
        path: &'static str,
        methods: &'static [&'static str],
        handler: MethodRouter<AppState>,
    ) -> Self {
        self.route_as(path, path, methods, handler)
    }

    /// [`Routes::route`] for a route the OpenAPI document names `doc_path`.
    pub(crate) fn route_as(
        mut self,
        path: &'static str,
        doc_path: &'static str,
        methods: &'static [&'static str],
        handler: MethodRouter<AppState>,
    ) -> Self {
        self.router = self.router.route(path, handler);
        self.table.push(Route {
            path,
            doc_path,
            methods,
        });
        self
    }

    /// Applies `f` (e.g. a layer) to the routes added so far.
    pub(crate) fn map_router(
        mut self,
        f: impl FnOnce(Router<AppState>) -> Router<AppState>,
    ) -> Self {
        self.router = f(self.router);
        self
    }

    pub(crate) fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    #[cfg(test)]
    pub(crate) fn table(&self) -> &[Route] {
        &self.table
    }

    pub(crate) fn into_router(self) -> Router<AppState> {
        self.router
    }
}
