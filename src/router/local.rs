//! Each thread's copy of what a request looks up by its host: the route key and policy,
//! the app environment's accounting handle and its access policy. Looking them up in the
//! router's shared tables takes three read locks, and every read lock (like every shared
//! reference count bumped) writes a cache line both worker threads write: a transfer
//! between cores each time, on every request. nginx's workers share nothing; here a
//! request reads one shared counter, the tables' generation, which only changes when a
//! table does.
//!
//! The copy is rebuilt from the tables after any change to them ([`Router::changed`]),
//! bounded in size, and holds only routed hosts (what a client sends otherwise goes to the
//! tables every time).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::accounting::LocalSite;
use super::acl::Enforcer;
use super::{RoutePolicy, Router};

/// Hosts kept per thread; past it the copy starts over.
const MAX_HOSTS: usize = 1024;

/// What a routed host resolves to.
pub(super) struct Resolved {
    /// The route key (`APP`, `APP-ENV`).
    pub key: String,
    pub policy: RoutePolicy,
    /// Its app environment's accounting, when it has an owner (this thread's handle).
    pub site: Option<Arc<LocalSite>>,
    /// Its access policy, when it has one.
    pub gate: Option<Arc<Enforcer>>,
}

struct Copy {
    /// Which router, and which generation of its tables, `hosts` were resolved from.
    router: u64,
    generation: u64,
    hosts: HashMap<String, Arc<Resolved>>,
}

thread_local! {
    static COPY: RefCell<Copy> = RefCell::new(Copy {
        router: 0,
        generation: 0,
        hosts: HashMap::new(),
    });
}

impl Router {
    /// The route for `host` (without its port), if any.
    pub(super) fn resolve(&self, host: &str) -> Option<Arc<Resolved>> {
        let generation = self.generation.0.load(Ordering::Acquire);
        let kept = COPY.with(|c| {
            let mut c = c.borrow_mut();
            if c.router != self.id || c.generation != generation {
                c.hosts.clear();
                c.router = self.id;
                c.generation = generation;
            }
            c.hosts.get(host).cloned()
        });
        if kept.is_some() {
            return kept;
        }
        let (key, policy) = self.route_for_host(host)?;
        let resolved = Arc::new(Resolved {
            site: self.site(&key).map(LocalSite::new),
            gate: self.enforcer(&key),
            key,
            policy,
        });
        COPY.with(|c| {
            let mut c = c.borrow_mut();
            // A table changed meanwhile: what was resolved may be stale; not kept.
            if c.router == self.id && c.generation == generation {
                if c.hosts.len() >= MAX_HOSTS {
                    c.hosts.clear();
                }
                c.hosts.insert(host.to_owned(), Arc::clone(&resolved));
            }
        });
        Some(resolved)
    }

    /// A table [`Router::resolve`] reads changed: every thread's copy is stale.
    pub(super) fn changed(&self) {
        self.generation.0.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::router::{Policy, RouterOptions};

    #[test]
    fn changes_to_any_table_are_seen_at_once() {
        let r = Router::new("apps.test".into(), RouterOptions::default());
        let web = r.resolve("web.apps.test").unwrap();
        assert_eq!(web.key, "web");
        assert!(web.site.is_none() && web.gate.is_none());
        assert!(Arc::ptr_eq(&web, &r.resolve("web.apps.test").unwrap()));
        assert!(r.resolve("www.shop.test").is_none());

        r.set_domains([("www.shop.test".to_string(), "shop".to_string())]);
        assert_eq!(r.resolve("www.shop.test").unwrap().key, "shop");
        r.set_policies(HashMap::from([(
            "shop".to_string(),
            RoutePolicy::new(true, 0, 0),
        )]));
        assert!(r.resolve("www.shop.test").unwrap().policy.force_https);
        r.set_owner("shop", "shop", "production");
        let site = r.resolve("www.shop.test").unwrap().site.clone().unwrap();
        assert_eq!((&*site.app, &*site.env), ("shop", "production"));
        r.set_policy(
            "shop",
            Policy {
                maintenance: true,
                ..Policy::default()
            },
        );
        assert!(r.resolve("www.shop.test").unwrap().gate.is_some());
        r.forget_owner("shop");
        r.set_policy("shop", Policy::default());
        let shop = r.resolve("www.shop.test").unwrap();
        assert!(shop.site.is_none() && shop.gate.is_none());

        // Another router on the same thread has tables of its own.
        let other = Router::new("apps.test".into(), RouterOptions::default());
        assert!(other.resolve("www.shop.test").is_none());
        assert!(r.resolve("www.shop.test").is_some());
    }
}
