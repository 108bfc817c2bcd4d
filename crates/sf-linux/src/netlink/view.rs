//! The links of a namespace as last known, kept up to date from the kernel's link messages
//! ([`super::events::link_updates`]) instead of a dump per pass: what lets an agent plan a
//! change of one network among thousands in milliseconds. [`LinkView`] owns that state and
//! the names that changed since the planner last asked ([`LinkView::take_dirty`]).
//!
//! Every RTM_NEWLINK of family AF_UNSPEC carries a link's whole state (kind, master, alias,
//! flags, VXLAN and bridge-port data, the IPv6 devconf), so applying the messages in the
//! order received gives the kernel's state; a message older than the current state is
//! followed by the newer one, because every change sends one. AF_BRIDGE messages (a bridge
//! port's own view) only mark their link as changed: an RTM_DELLINK of that family means the
//! port left its bridge, not that the link is gone. The kernel sends the AF_UNSPEC message
//! of a change only while the link is up (`netdev_state_change`): a bridge-port flag changed
//! on a link that is down arrives as an AF_BRIDGE message alone, so such a link is "unsure"
//! until its next whole message, and [`refresh`] reads it back (one RTM_GETLINK). What sends
//! no link message at all (IPv6 devconf writes, addresses) is the planner's to track or the
//! periodic full dump's to catch.
//!
//! A lost message (receive buffer overrun) makes the view stale: only a dump makes it
//! trustworthy again. Messages that arrive while a dump runs are replayed on top of it
//! ([`LinkView::begin_dump`], [`LinkView::finish_dump`]), so a change made during the dump is
//! not lost under the dump's older picture.

use std::collections::{BTreeSet, HashMap};

use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::AddressFamily;

use futures::TryStreamExt;

use super::events::LinkUpdate;
use super::observe::parse_link_with;
use super::{Netlink, NetlinkError};
use crate::links::Link;

/// The links of one namespace by ifindex, with the names changed since the last look.
#[derive(Debug, Default)]
pub struct LinkView {
    links: HashMap<u32, Link>,
    by_name: HashMap<String, u32>,
    dirty: BTreeSet<String>,
    /// Links (ifindex) whose last message was a bridge-port one: their state may be older.
    unsure: BTreeSet<u32>,
    /// No dump yet, or messages were lost since the last one.
    stale: bool,
    /// Updates received while a dump runs, replayed on top of it.
    recording: Option<Vec<LinkUpdate>>,
}

impl LinkView {
    /// An empty view, stale until the first dump.
    pub fn new() -> Self {
        LinkView {
            stale: true,
            ..Default::default()
        }
    }

    /// Whether only a dump can be trusted (none yet, or messages were lost).
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    pub fn mark_stale(&mut self) {
        self.stale = true;
    }

    /// A dump starts: updates from now on are also kept to be replayed on top of it.
    pub fn begin_dump(&mut self) {
        self.recording = Some(Vec::new());
        self.stale = false;
    }

    /// The dump's links replace the view; the updates received meanwhile are replayed.
    /// Stays stale if messages were lost during the dump.
    pub fn finish_dump(&mut self, links: Vec<Link>) {
        let replay = self.recording.take().unwrap_or_default();
        self.by_name = links.iter().map(|l| (l.name.clone(), l.ifindex)).collect();
        self.unsure.clear();
        self.links = links.into_iter().map(|l| (l.ifindex, l)).collect();
        for u in &replay {
            self.apply(u);
        }
    }

    /// A dump failed: the view stays as it was, and stale.
    pub fn abort_dump(&mut self) {
        self.recording = None;
        self.stale = true;
    }

    /// Applies one link message; true when it changed what the view holds (a message
    /// repeating the known state, such as a carrier or operstate notice, changes nothing
    /// and marks nothing).
    pub fn apply(&mut self, u: &LinkUpdate) -> bool {
        if let Some(r) = &mut self.recording {
            r.push(u.clone());
        }
        match u {
            LinkUpdate::Overrun => {
                self.stale = true;
                true
            }
            LinkUpdate::New(m) | LinkUpdate::Deleted(m) if is_bridge_port_view(m) => self.touch(m),
            LinkUpdate::New(m) => self.upsert(m),
            LinkUpdate::Deleted(m) => self.remove(m.header.index),
        }
    }

    fn upsert(&mut self, m: &LinkMessage) -> bool {
        let links = &self.links;
        let Some(l) = parse_link_with(m, |i| links.get(&i).map(|l| l.name.clone())) else {
            return false;
        };
        if self.links.get(&l.ifindex) == Some(&l) {
            self.unsure.remove(&l.ifindex);
            return false;
        }
        // Renamed, or the name's former link gone without its message reaching us.
        if let Some(old) = self.links.get(&l.ifindex).map(|o| o.name.clone()) {
            if old != l.name {
                self.by_name.remove(&old);
                self.dirty.insert(old);
            }
        }
        if let Some(other) = self.by_name.get(&l.name).copied() {
            if other != l.ifindex {
                self.links.remove(&other);
            }
        }
        self.by_name.insert(l.name.clone(), l.ifindex);
        self.unsure.remove(&l.ifindex);
        self.dirty.insert(l.name.clone());
        self.links.insert(l.ifindex, l);
        true
    }

    fn remove(&mut self, index: u32) -> bool {
        self.unsure.remove(&index);
        let Some(l) = self.links.remove(&index) else {
            return false;
        };
        if self.by_name.get(&l.name) == Some(&index) {
            self.by_name.remove(&l.name);
        }
        self.dirty.insert(l.name);
        true
    }

    /// A bridge port's message: its state may have changed in ways only a read shows.
    fn touch(&mut self, m: &LinkMessage) -> bool {
        let Some(l) = self.links.get(&m.header.index) else {
            return false;
        };
        self.dirty.insert(l.name.clone());
        self.unsure.insert(m.header.index);
        true
    }

    /// The links whose state may be older than the kernel's (see the module doc).
    pub fn take_unsure(&mut self) -> BTreeSet<u32> {
        std::mem::take(&mut self.unsure)
    }

    /// The names of the links changed since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    pub fn get(&self, name: &str) -> Option<&Link> {
        self.by_name.get(name).and_then(|i| self.links.get(i))
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    /// Every link, by ifindex (the order a dump gives).
    pub fn to_vec(&self) -> Vec<Link> {
        let mut v: Vec<Link> = self.links.values().cloned().collect();
        v.sort_by_key(|l| l.ifindex);
        v
    }

    /// Records a change the kernel announces with no link message: the host's IPv6 turned
    /// off on `name` (a write to its devconf).
    pub fn set_ipv6_disabled(&mut self, name: &str) {
        if let Some(l) = self.by_name.get(name).and_then(|i| self.links.get_mut(i)) {
            l.ipv6_enabled = Some(false);
        }
    }
}

/// Reads back the links the view is unsure of (one RTM_GETLINK each) and applies them;
/// returns how many were read. A link gone meanwhile is left to its RTM_DELLINK.
pub async fn refresh(
    nl: &Netlink,
    view: &std::sync::Mutex<LinkView>,
) -> Result<usize, NetlinkError> {
    let unsure = lock(view).take_unsure();
    for &index in &unsure {
        match read_back(nl, index).await {
            Ok(msgs) => {
                let mut v = lock(view);
                for m in msgs {
                    v.apply(&LinkUpdate::New(m));
                }
            }
            Err(e) => {
                // Still unsure: asked again next time.
                lock(view).unsure.insert(index);
                return Err(e);
            }
        }
    }
    Ok(unsure.len())
}

/// The link with ifindex `index` as the kernel has it now (one RTM_GETLINK); none when it is
/// gone meanwhile (its RTM_DELLINK says so).
pub async fn read_back(nl: &Netlink, index: u32) -> Result<Vec<LinkMessage>, NetlinkError> {
    let got: Result<Vec<LinkMessage>, _> = nl
        .handle()
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_collect()
        .await;
    match got {
        Ok(msgs) => Ok(msgs),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(vec![]),
        Err(e) => Err(e.into()),
    }
}

fn lock(view: &std::sync::Mutex<LinkView>) -> std::sync::MutexGuard<'_, LinkView> {
    view.lock().unwrap_or_else(|p| p.into_inner())
}

/// An AF_BRIDGE message: a bridge port's own view, not the link's whole state.
fn is_bridge_port_view(m: &LinkMessage) -> bool {
    m.header.interface_family == AddressFamily::Bridge
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::{
        InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVxlan, LinkAttribute,
        LinkFlags, LinkInfo,
    };

    fn msg(index: u32, name: &str, attrs: Vec<LinkAttribute>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.extend(attrs);
        m
    }

    fn bridge(index: u32, name: &str) -> LinkMessage {
        msg(
            index,
            name,
            vec![
                LinkAttribute::IfAlias(crate::links::OWNER_ALIAS.into()),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
            ],
        )
    }

    fn vxlan_port(index: u32, name: &str, master: u32, up: bool) -> LinkMessage {
        let mut m = msg(
            index,
            name,
            vec![
                LinkAttribute::Controller(master),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Vxlan),
                    LinkInfo::Data(InfoData::Vxlan(vec![InfoVxlan::Id(7)])),
                    LinkInfo::PortKind(InfoPortKind::Bridge),
                    LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Learning(
                        false,
                    )])),
                ]),
            ],
        );
        if up {
            m.header.flags = LinkFlags::Up;
        }
        m
    }

    fn dumped() -> LinkView {
        let mut v = LinkView::new();
        v.begin_dump();
        v.finish_dump(vec![Link {
            name: "lo".into(),
            ifindex: 1,
            ..Default::default()
        }]);
        v
    }

    #[test]
    fn messages_keep_the_state_and_the_changed_names() {
        let mut v = dumped();
        assert!(!v.is_stale());
        v.apply(&LinkUpdate::New(bridge(5, "brvx-7")));
        v.apply(&LinkUpdate::New(vxlan_port(6, "vxlan7", 5, false)));
        v.apply(&LinkUpdate::New(vxlan_port(6, "vxlan7", 5, true)));
        let vx = v.get("vxlan7").unwrap();
        assert_eq!(vx.master.as_deref(), Some("brvx-7"));
        assert!(vx.up && !vx.owned);
        assert_eq!(vx.port_learning, Some(false));
        assert!(v.get("brvx-7").unwrap().owned);
        assert_eq!(
            v.take_dirty(),
            BTreeSet::from(["brvx-7".to_string(), "vxlan7".into()])
        );
        assert!(v.take_dirty().is_empty());
        // The same state again (a carrier notice): nothing changed, nothing marked.
        assert!(!v.apply(&LinkUpdate::New(vxlan_port(6, "vxlan7", 5, true))));
        assert!(v.take_dirty().is_empty());
        // A port leaving its bridge (AF_BRIDGE dellink) is no deletion of the link.
        let mut port_left = vxlan_port(6, "vxlan7", 5, true);
        port_left.header.interface_family = AddressFamily::Bridge;
        v.apply(&LinkUpdate::Deleted(port_left));
        assert!(v.get("vxlan7").is_some());
        assert_eq!(v.take_dirty(), BTreeSet::from(["vxlan7".to_string()]));
        v.apply(&LinkUpdate::Deleted(vxlan_port(6, "vxlan7", 5, true)));
        assert!(v.get("vxlan7").is_none());
        assert_eq!(v.len(), 2);
        v.apply(&LinkUpdate::Overrun);
        assert!(v.is_stale());
    }

    #[test]
    fn a_name_moves_to_its_new_ifindex() {
        // Deleted and created again, the deletion's message lost: the name's new link wins.
        let mut v = dumped();
        v.apply(&LinkUpdate::New(bridge(5, "brvx-7")));
        v.apply(&LinkUpdate::New(bridge(9, "brvx-7")));
        assert_eq!(v.len(), 2);
        assert_eq!(v.get("brvx-7").unwrap().ifindex, 9);
        // Renamed: the old name is gone and changed.
        v.take_dirty();
        v.apply(&LinkUpdate::New(bridge(9, "brvx-8")));
        assert!(v.get("brvx-7").is_none());
        assert_eq!(
            v.take_dirty(),
            BTreeSet::from(["brvx-7".to_string(), "brvx-8".into()])
        );
    }

    #[test]
    fn updates_during_a_dump_are_replayed_on_top_of_it() {
        let mut v = dumped();
        v.begin_dump();
        // Made after the dump read its links: the dump does not show it.
        v.apply(&LinkUpdate::New(bridge(5, "brvx-7")));
        v.finish_dump(vec![Link {
            name: "lo".into(),
            ifindex: 1,
            ..Default::default()
        }]);
        assert!(v.get("brvx-7").is_some());
        assert!(!v.is_stale());
        // Lost during a dump: still stale after it.
        v.begin_dump();
        v.apply(&LinkUpdate::Overrun);
        v.finish_dump(vec![]);
        assert!(v.is_stale());
    }
}
