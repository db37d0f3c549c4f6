//! The store's behaviour, every test run against SQLite and PostgreSQL.

/// One test body (an `async fn(&Ctx)`) as a SQLite and a PostgreSQL test.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let ctx = crate::common::Ctx::sqlite(stringify!($name)).await;
                super::$name(&ctx).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(ctx) = crate::common::Ctx::postgres(module_path!()).await else { return };
                super::$name(&ctx).await;
            }
        }
    )* };
}

mod accounts;
mod approvals;
mod common;
mod decisions;
mod outage;
mod security;
mod users;
