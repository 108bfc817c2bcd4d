// Replays CloudStack's Netris provider calls (apache/cloudstack
// plugins/network-elements/netris, NetrisApiClientImpl) through the real Netris Java SDK
// against a StackFabric REST endpoint. Our own code; the SDK jar itself is not in the
// repository (it is not redistributable): compile and run with it on the class path.
//
//   javac -cp netris-java-sdk-1.0.0.jar -d out CloudStackReplay.java
//   java -cp netris-java-sdk-1.0.0.jar:out CloudStackReplay URL USER PASSWORD [PREFIX PUBLIC24 ZONE6 TIER6]
//   (PREFIX D1-A2-Z1, PUBLIC24 203.0.113, ZONE6 the zone's public IPv6 range 2001:db8:100:ff::/64,
//   TIER6 the routed tier's /64 2001:db8:130:1::/64; both inside the lab's IPv6 pool)
//
// Prints one line per call, PASS or FAIL with the exception (a Gson JsonSyntaxException is
// the shape mismatch CloudStack cannot catch); exits 1 when any call failed.

import io.netris.ApiClient;
import io.netris.api.v1.AclApi;
import io.netris.api.v1.AuthenticationApi;
import io.netris.api.v1.RoutesApi;
import io.netris.api.v1.SitesApi;
import io.netris.api.v1.TenantsApi;
import io.netris.api.v2.IpamApi;
import io.netris.api.v2.L4LoadBalancerApi;
import io.netris.api.v2.NatApi;
import io.netris.api.v2.VNetApi;
import io.netris.api.v2.VpcApi;
import io.netris.model.*;
import io.netris.model.response.TenantResponse;

import java.math.BigDecimal;
import java.net.InetAddress;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.Callable;

public class CloudStackReplay {
    static int failed = 0, passed = 0;

    static <T> T step(String what, Callable<T> f) {
        try {
            T r = f.call();
            passed++;
            System.out.println("PASS " + what);
            return r;
        } catch (Throwable e) {
            failed++;
            Throwable c = e;
            System.out.println("FAIL " + what + ": " + e.getClass().getSimpleName() + ": " + e.getMessage()
                    + (e instanceof io.netris.ApiException ? " body=" + ((io.netris.ApiException) e).getResponseBody() : ""));
            return null;
        }
    }

    static RoutesBodyVpcVpc rv6(Integer id, String name) {
        return new RoutesBodyVpcVpc().id(id).name(name).isDefault(false).isSystem(false);
    }

    static NatPostBody named(String name) {
        NatPostBody b = new NatPostBody();
        b.setName(name);
        return b;
    }

    static void check(boolean ok, String what) {
        if (!ok) throw new IllegalStateException("check failed: " + what);
    }

    /** Whether prefix `outer` holds prefix `inner` (IPAddress.contains in CloudStack). */
    static boolean encloses(String outer, String inner) throws Exception {
        String[] o = outer.split("/"), i = inner.split("/");
        byte[] a = InetAddress.getByName(o[0]).getAddress(), b = InetAddress.getByName(i[0]).getAddress();
        int ol = Integer.parseInt(o[1]), il = Integer.parseInt(i[1]);
        if (a.length != b.length || il < ol) return false;
        for (int bit = 0; bit < ol; bit++) {
            int sh = 7 - bit % 8;
            if (((a[bit / 8] >> sh) & 1) != ((b[bit / 8] >> sh) & 1)) return false;
        }
        return true;
    }

    /** NetrisApiClientImpl.getIpamAllocationIdByPrefixAndVpc: the first allocation of the
     *  IPAM tree (the SDK sends no filter there, so every VPC's) equal to or enclosing `prefix`. */
    static IpTreeAllocation enclosingAllocation(IpamApi ipam, FilterBySites fs, FilterByVpc fv, String prefix) throws Exception {
        for (IpTreeAllocation al : ipam.apiV2IpamGet(fs, fv).getData())
            if (al.getPrefix().equals(prefix) || encloses(al.getPrefix(), prefix)) return al;
        return null;
    }

    /** NetrisApiClientImpl.getIpamSubnetByAllocationAndPrefixAndPurposeAndVpc. */
    static IpTreeSubnet subnetOf(IpamApi ipam, FilterByVpc fv, BigDecimal allocationId, String prefix) throws Exception {
        for (IpTreeSubnet sn : ipam.apiV2IpamSubnetsGet(fv).getData())
            if (allocationId.equals(sn.getAllocationID()) && prefix.equals(sn.getPrefix())
                    && sn.getPurpose() == IpTreeSubnet.PurposeEnum.COMMON) return sn;
        return null;
    }

    static IpTreeSubnet subnetNamed(IpamApi ipam, FilterByVpc fv, String name) throws Exception {
        for (IpTreeSubnet sn : ipam.apiV2IpamSubnetsGet(fv).getData()) if (name.equals(sn.getName())) return sn;
        return null;
    }

    public static void main(String[] a) throws Exception {
        String url = a[0], user = a[1], pass = a[2];
        String prefix = a.length > 3 ? a[3] : "D1-A2-Z1";
        String pub = a.length > 4 ? a[4] : "203.0.113";
        ApiClient client = step("login (new ApiClient: POST /api/auth, Set-Cookie)",
                () -> new ApiClient(url, user, pass, 1L));
        if (client == null) { System.out.println("RESULT passed=" + passed + " failed=" + failed); System.exit(1); }
        AuthenticationApi auth = client.getApiStubForMethod(AuthenticationApi.class);
        SitesApi sites = client.getApiStubForMethod(SitesApi.class);
        TenantsApi tenants = client.getApiStubForMethod(TenantsApi.class);
        VpcApi vpcApi = client.getApiStubForMethod(VpcApi.class);
        IpamApi ipam = client.getApiStubForMethod(IpamApi.class);
        VNetApi vnetApi = client.getApiStubForMethod(VNetApi.class);
        NatApi natApi = client.getApiStubForMethod(NatApi.class);
        L4LoadBalancerApi lbApi = client.getApiStubForMethod(L4LoadBalancerApi.class);
        AclApi aclApi = client.getApiStubForMethod(AclApi.class);
        RoutesApi routesApi = client.getApiStubForMethod(RoutesApi.class);

        step("GET /api/auth (CheckHealth)", () -> { check(auth.apiAuthGet().getStatusCode() == 200, "200"); return 1; });
        GetSiteBody site = step("GET /api/sites", () -> sites.apiSitesGet().getData().get(0));
        TenantResponse tenant = step("GET /api/tenants", () -> {
            for (TenantResponse t : tenants.apiTenantsGet().getData().getData()) if ("Admin".equals(t.getName())) return t;
            throw new IllegalStateException("no Admin tenant");
        });
        if (site == null || tenant == null) { System.out.println("RESULT passed=" + passed + " failed=" + failed); System.exit(1); }
        IpTreeAllocationTenant ten = new IpTreeAllocationTenant().id(tenant.getId()).name("Admin");
        List<IpTreeSubnetSites> siteList = new ArrayList<>();
        siteList.add(new IpTreeSubnetSites().id(new BigDecimal(site.getId())).name(site.getName()));

        // Provider set-up: the zone's public range (System VPC).
        step("POST ipam/allocation (zone public range)", () -> ipam.apiV2IpamAllocationPost(new AllocationBody()
                .name("Z1-" + pub + ".0/24").prefix(pub + ".0/24").tenant(ten)
                .vpc(new AllocationBodyVpc().id(1).name("System VPC"))).getData().getId());
        step("GET ipam/subnets (allocationID)", () -> ipam.apiV2IpamSubnetsGet(null).getData().size());
        step("GET ipam (tree)", () -> ipam.apiV2IpamGet(null, null).getData().size());

        // VPC with its allocation, rename.
        String vname = prefix + "-V5-sdkvpc";
        VPCCreate vc = new VPCCreate();
        vc.setName(vname);
        VPCAdminTenant at = new VPCAdminTenant(); at.setId(tenant.getId().intValue()); at.setName("Admin");
        vc.setAdminTenant(at);
        Integer vpcId = step("POST vpc", () -> vpcApi.apiV2VpcPost(vc).getData().getId());
        step("POST ipam/allocation (VPC CIDR)", () -> ipam.apiV2IpamAllocationPost(new AllocationBody()
                .name(vname + "-10.40.0.0/16").prefix("10.40.0.0/16").tenant(ten)
                .vpc(new AllocationBodyVpc().id(vpcId).name(vname))).getData().getId());
        step("PUT vpc (rename)", () -> {
            VpcVpcIdBody b = new VpcVpcIdBody(); b.setId(vpcId); b.setName(vname + "x"); b.setAdminTenant(at);
            return vpcApi.apiV2VpcVpcIdPut(b, vpcId).getData().getId();
        });
        step("GET vpc (list, find by name)", () -> {
            for (VPCListing v : vpcApi.apiV2VpcGet().getData()) if ((vname + "x").equals(v.getName())) return v.getId();
            throw new IllegalStateException("renamed VPC not listed");
        });

        // Tier.
        step("POST ipam/subnet (tier common)", () -> ipam.apiV2IpamSubnetPost(new SubnetBody()
                .name(vname + "-N9-tier1").prefix("10.40.1.0/24").tenant(ten).sites(siteList)
                .purpose(SubnetBody.PurposeEnum.COMMON).globalRouting(false)
                .vpc(new AllocationBodyVpc().id(vpcId).name(vname))).getData().getId());
        Integer vnetId = step("POST vnet", () -> {
            VnetAddBody b = new VnetAddBody().name(vname + "-N9-tier1").tenant(ten).sites(siteList)
                    .vpc(new VnetAddBodyVpc().id(vpcId).name(vname));
            b.setVxlanID(1600009);
            List<VnetAddBodyGateways> gws = new ArrayList<>();
            gws.add(new VnetAddBodyGateways().prefix("10.40.1.1/24").dhcpEnabled(false));
            b.setGateways(gws);
            return vnetApi.apiV2VnetPost(b).getData().getId();
        });
        FilterBySites fs = new FilterBySites(); fs.add(site.getId());
        FilterByVpc fv = new FilterByVpc(); fv.add(vpcId);
        step("GET vnet ?filterBySites&filterByVpc", () -> {
            List<VnetsBody> l = vnetApi.apiV2VnetGet(fs, fv).getData();
            check(l.size() == 1, "one vnet in the VPC, got " + l.size());
            return l.get(0).getVxlanID();
        });

        // A dual-stack tier, as NetrisApiClientImpl.createVnet sends it: an IPv6 allocation for
        // the tier's /64 (the SDK's AllocationBody has no ipFamily: the prefix says it), the IPv4
        // and the IPv6 common subnets each named from the VPC and its own CIDR, the IPv6 one with
        // globalRouting, and the vNet's second gateway. Sent here as a bare address (the form
        // NetUtils.getIpv6Gateway may yield); the REST contract test covers `addr/64`.
        String v6 = "fd00:40:0:2::/64";
        step("POST ipam/allocation (tier IPv6 /64, no ipFamily)", () -> ipam.apiV2IpamAllocationPost(new AllocationBody()
                .name(vname + "-" + v6).prefix(v6).tenant(ten)
                .vpc(new AllocationBodyVpc().id(vpcId).name(vname))).getData().getId());
        step("POST ipam/subnet (dual-stack tier, IPv4 common)", () -> ipam.apiV2IpamSubnetPost(new SubnetBody()
                .name(vname + "-10.40.2.0/24").prefix("10.40.2.0/24").tenant(ten).sites(siteList)
                .purpose(SubnetBody.PurposeEnum.COMMON).globalRouting(false)
                .vpc(new AllocationBodyVpc().id(vpcId).name(vname))).getData().getId());
        step("POST ipam/subnet (dual-stack tier, IPv6 common, globalRouting)", () -> ipam.apiV2IpamSubnetPost(new SubnetBody()
                .name(vname + "-" + v6).prefix(v6).tenant(ten).sites(siteList)
                .purpose(SubnetBody.PurposeEnum.COMMON).globalRouting(true)
                .vpc(new AllocationBodyVpc().id(vpcId).name(vname))).getData().getId());
        Integer vnet6Id = step("POST vnet (dual-stack: second gateway fd00:40:0:2::1)", () -> {
            VnetAddBody b = new VnetAddBody().name(vname + "-N10-tier2").tenant(ten).sites(siteList)
                    .vpc(new VnetAddBodyVpc().id(vpcId).name(vname));
            b.setVxlanID(1600010);
            List<VnetAddBodyGateways> gws = new ArrayList<>();
            gws.add(new VnetAddBodyGateways().prefix("10.40.2.1/24").dhcpEnabled(false));
            gws.add(new VnetAddBodyGateways().prefix("fd00:40:0:2::1").dhcpEnabled(false));
            b.setGateways(gws);
            return vnetApi.apiV2VnetPost(b).getData().getId();
        });
        step("GET vnet (the dual-stack tier lists both gateways)", () -> {
            for (VnetsBody v : vnetApi.apiV2VnetGet(fs, fv).getData()) {
                if (!vnet6Id.equals(v.getId().intValue())) continue;
                check(v.getGateways().size() == 2, "two gateways, got " + v.getGateways().size());
                check(v.getGateways().get(1).getPrefix().startsWith("fd00:40:0:2::1"),
                        "IPv6 gateway listed back, got " + v.getGateways().get(1).getPrefix());
                return 1;
            }
            throw new IllegalStateException("dual-stack vnet not listed");
        });

        // Routed IPv6 in CloudStack's provider's sequence. The zone's public IPv6 range
        // (setupZoneLevelPublicRange(ip6Cidr, ip6Cidr)): an allocation and a common subnet of
        // that prefix in the System VPC, each made only when CloudStack's look-up does not find
        // it. Here a /64 of the lab's site IPv6 pool 2001:db8:100::/40, which adopts it.
        String zone6 = a.length > 5 ? a[5] : "2001:db8:100:ff::/64";
        String tier6 = a.length > 6 ? a[6] : "2001:db8:130:1::/64";
        String tier6Gw = tier6.substring(0, tier6.indexOf("::/")) + "::1"; // NetUtils.getIpv6Gateway
        String t6name = vname + "-N11-tier3";
        VPCListing sys = step("GET vpc (getSystemVpc: isSystem)", () -> {
            for (VPCListing v : vpcApi.apiV2VpcGet().getData()) if (Boolean.TRUE.equals(v.isIsSystem())) return v;
            throw new IllegalStateException("no System VPC listed");
        });
        AllocationBodyVpc sysVpc = sys == null ? null : new AllocationBodyVpc().id(sys.getId()).name(sys.getName());
        FilterByVpc fvSys = new FilterByVpc(); if (sys != null) fvSys.add(sys.getId());
        BigDecimal zone6Id = step("zone IPv6 range " + zone6 + ": not found, allocation created, found by CloudStack's look-up", () -> {
            check(enclosingAllocation(ipam, fs, fvSys, zone6) == null, "no allocation holds " + zone6 + " yet");
            Integer id = ipam.apiV2IpamAllocationPost(new AllocationBody().name("Z1-" + zone6).prefix(zone6)
                    .tenant(ten).vpc(sysVpc)).getData().getId();
            IpTreeAllocation al = enclosingAllocation(ipam, fs, fvSys, zone6);
            check(al != null && al.getId().equals(new BigDecimal(id)), "the tree lists it with the id returned (" + id + ")");
            check(zone6.equals(al.getPrefix()), "prefix " + zone6 + ", got " + al.getPrefix());
            check(al.getIpFamily() == IpTreeAllocation.IpFamilyEnum.IPV6, "ipFamily ipv6, got " + al.getIpFamily());
            check(al.getVpc() != null && sys.getId().equals(al.getVpc().getId()), "in the System VPC");
            return al.getId();
        });
        step("zone IPv6 range: common subnet " + zone6 + ", found by allocationID, prefix and purpose", () -> {
            check(subnetOf(ipam, fvSys, zone6Id, zone6) == null, "not there yet");
            ipam.apiV2IpamSubnetPost(new SubnetBody().name("Z1-" + zone6).prefix(zone6).tenant(ten).sites(siteList)
                    .purpose(SubnetBody.PurposeEnum.COMMON).vpc(sysVpc));
            IpTreeSubnet sn = subnetOf(ipam, fvSys, zone6Id, zone6);
            check(sn != null, "CloudStack's look-up finds it (allocationID " + zone6Id + ")");
            check(sn.getIpFamily() == IpTreeSubnet.IpFamilyEnum.IPV6, "ipFamily ipv6, got " + sn.getIpFamily());
            return sn.getId();
        });
        // A routed dual-stack tier (createVnet with ipv6Cidr and globalRouting): the IPv4 common
        // subnet; the tier's /64 as an allocation of the VPC unless one of the VPC's allocations
        // holds it (the SDK sends the VPC filter on GET /api/v2/ipam); the IPv6 common subnet
        // with globalRouting; the vNet with both gateways.
        step("POST ipam/subnet (routed tier, IPv4 common, globalRouting)", () -> ipam.apiV2IpamSubnetPost(new SubnetBody()
                .name(vname + "-10.40.3.0/24").prefix("10.40.3.0/24").tenant(ten).sites(siteList)
                .purpose(SubnetBody.PurposeEnum.COMMON).globalRouting(true)
                .vpc(new AllocationBodyVpc().id(vpcId).name(vname))).getData().getId());
        BigDecimal tier6Alloc = step("IPv6 allocation " + tier6 + ": not in the VPC's tree, created, found by the look-up", () -> {
            check(enclosingAllocation(ipam, fs, fv, tier6) == null, "none of the VPC's allocations holds " + tier6);
            Integer id = ipam.apiV2IpamAllocationPost(new AllocationBody().name(vname + "-" + tier6).prefix(tier6)
                    .tenant(ten).vpc(new AllocationBodyVpc().id(vpcId).name(vname))).getData().getId();
            IpTreeAllocation al = enclosingAllocation(ipam, fs, fv, tier6);
            check(al != null && al.getId().equals(new BigDecimal(id)), "listed with the id returned (" + id + ")");
            check(al.getIpFamily() == IpTreeAllocation.IpFamilyEnum.IPV6, "ipFamily ipv6, got " + al.getIpFamily());
            check(al.getVpc() != null && vpcId.equals(al.getVpc().getId()), "in the VPC");
            return al.getId();
        });
        step("POST ipam/subnet (routed tier, IPv6 common, globalRouting) " + tier6, () -> ipam.apiV2IpamSubnetPost(new SubnetBody()
                .name(vname + "-" + tier6).prefix(tier6).tenant(ten).sites(siteList)
                .purpose(SubnetBody.PurposeEnum.COMMON).globalRouting(true)
                .vpc(new AllocationBodyVpc().id(vpcId).name(vname))).getData().getId());
        Integer vnet7Id = step("POST vnet (routed dual-stack tier: gateways 10.40.3.1/24 and " + tier6Gw + ")", () -> {
            VnetAddBody b = new VnetAddBody().name(t6name).tenant(ten).sites(siteList)
                    .vpc(new VnetAddBodyVpc().id(vpcId).name(vname));
            b.setVxlanID(1600011);
            b.setCustomAnycastMac(""); b.setL3vpn(false); b.setNativeVlan(0); b.setVlan(0); b.setVlanAware(false);
            b.setVlans(""); b.setState(VnetAddBody.StateEnum.ACTIVE); b.setGuestTenants(new ArrayList<>());
            b.setPorts(new ArrayList<>()); b.setTags(Collections.singletonList("cs-lab"));
            VnetAddBodyDhcp dhcp = new VnetAddBodyDhcp(); dhcp.setStart(""); dhcp.setEnd(""); dhcp.setOptionSet(new VnetAddBodyDhcpOptionSet());
            List<VnetAddBodyGateways> gws = new ArrayList<>();
            gws.add(new VnetAddBodyGateways().prefix("10.40.3.1/24").dhcpEnabled(false).dhcp(dhcp));
            gws.add(new VnetAddBodyGateways().prefix(tier6Gw).dhcpEnabled(false).dhcp(dhcp));
            b.setGateways(gws);
            return vnetApi.apiV2VnetPost(b).getData().getId();
        });
        step("GET vnet, GET ipam/subnets (the routed tier: IPv6 gateway; subnet ipv6, common, globalRouting)", () -> {
            VnetsBody got = null;
            for (VnetsBody v : vnetApi.apiV2VnetGet(null, fv).getData()) if (t6name.equals(v.getName())) got = v;
            check(got != null && vnet7Id.equals(got.getId().intValue()), "listed with its id");
            check(got.getVxlanID() == 1600011, "vxlanID 1600011, got " + got.getVxlanID());
            check(got.getGateways().size() == 2 && got.getGateways().get(1).getPrefix().startsWith(tier6Gw),
                    "IPv6 gateway listed back, got " + got.getGateways());
            IpTreeSubnet sn = subnetNamed(ipam, fv, vname + "-" + tier6);
            check(sn != null && tier6.equals(sn.getPrefix()), "subnet listed with prefix " + tier6);
            check(sn.getIpFamily() == IpTreeSubnet.IpFamilyEnum.IPV6, "ipFamily ipv6, got " + sn.getIpFamily());
            check(sn.getPurpose() == IpTreeSubnet.PurposeEnum.COMMON && sn.isGlobalRouting(), "common with globalRouting");
            check(tier6Alloc.equals(sn.getAllocationID()), "allocationID " + tier6Alloc + ", got " + sn.getAllocationID());
            check(sn.getVpc() != null && vpcId.equals(sn.getVpc().getId()), "in the VPC");
            return 1;
        });
        step("PUT vnet (updateVnetInternal's rename: both gateways sent back as listed)", () -> {
            VnetsBody cur = null;
            for (VnetsBody v : vnetApi.apiV2VnetGet(null, fv).getData()) if (t6name.equals(v.getName())) cur = v;
            VnetEditBodyDhcp dhcp = new VnetEditBodyDhcp(); dhcp.setStart(""); dhcp.setEnd(""); dhcp.setOptionSet(new VnetAddBodyDhcpOptionSet());
            List<VnetEditBodyGateways> gws = new ArrayList<>();
            gws.add(new VnetEditBodyGateways().prefix(cur.getGateways().get(0).getPrefix()).dhcpEnabled(false).dhcp(dhcp));
            gws.add(new VnetEditBodyGateways().prefix(cur.getGateways().get(1).getPrefix()).dhcpEnabled(false).dhcp(dhcp));
            VnetEditBody b = new VnetEditBody().name(t6name + "-web").vpc(new VnetAddBodyVpc().id(vpcId).name(vname));
            b.setGateways(gws); b.setGuestTenants(new ArrayList<>()); b.setL3vpn(false); b.setNativeVlan(0);
            b.setVxlanID(cur.getVxlanID()); b.setPorts(new ArrayList<>()); b.setSites(siteList);
            b.setState(VnetEditBody.StateEnum.ACTIVE); b.setTenant(ten); b.setVlan(0); b.setVlanAware(false);
            b.setVlans(""); b.setTags(cur.getTags());
            vnetApi.apiV2VnetIdPut(b, cur.getId().intValue());
            for (VnetsBody v : vnetApi.apiV2VnetGet(null, fv).getData())
                if ((t6name + "-web").equals(v.getName())) {
                    check(v.getGateways().size() == 2 && v.getGateways().get(1).getPrefix().startsWith(tier6Gw), "both gateways kept");
                    return 1;
                }
            throw new IllegalStateException("renamed dual-stack tier not listed");
        });
        // An IPv6 static route via a VM of the routed tier: add, list (name = prefix), update, delete.
        String r6 = tier6.substring(0, tier6.indexOf("::/")) .replaceAll(":[0-9a-f]+$", "") + ":99::/64";
        String hop6 = tier6Gw.replaceAll("::1$", "::11"), hop6b = tier6Gw.replaceAll("::1$", "::12");
        step("POST routes " + r6 + " via " + hop6, () -> {
            RoutesPostBody b = new RoutesPostBody().vpc(rv6(vpcId, vname));
            b.setPrefix(r6); b.setNextHop(hop6); b.setDescription(prefix + "-V5");
            b.setSiteId(new BigDecimal(site.getId())); b.setStateStatus(RoutesBody.StateStatusEnum.ACTIVE);
            b.setSwitches(Collections.emptyList());
            return routesApi.apiRoutesPost(b).getData().getId();
        });
        RoutesGetBody route6 = step("GET routes ?filterBySites&filterByVpc (the IPv6 route: name = prefix, next_hop)", () -> {
            RoutesGetBody got = null;
            for (RoutesGetBody r : routesApi.apiRoutesGet(fs, fv).getData()) if (r6.equals(r.getName())) got = r;
            check(got != null, "listed by name " + r6);
            check(r6.equals(got.getPrefix()) && hop6.equals(got.getNextHop()), "prefix and next_hop, got " + got.getPrefix() + " " + got.getNextHop());
            check(got.getPrefixLength() == 64, "prefix_length 64, got " + got.getPrefixLength());
            return got;
        });
        step("PUT routes (the IPv6 route's next hop -> " + hop6b + ")", () -> {
            RoutesPutBody b = new RoutesPutBody().prefix(r6).nextHop(hop6b).description(prefix + "-V5")
                    .siteId(new BigDecimal(site.getId())).stateStatus(RoutesPutBody.StateStatusEnum.ACTIVE);
            b.setSwitches(Collections.emptyList());
            b.id(route6.getId()); // serialized as `route_id`
            routesApi.apiRoutesPut(b);
            for (RoutesGetBody r : routesApi.apiRoutesGet(fs, fv).getData())
                if (r6.equals(r.getName())) { check(hop6b.equals(r.getNextHop()), "next_hop " + hop6b + ", got " + r.getNextHop()); return 1; }
            throw new IllegalStateException("IPv6 route no longer listed");
        });
        step("DELETE routes " + r6, () -> routesApi.apiRoutesDelete(new RoutesBodyId().id(route6.getId())).isIsSuccess());

        // An IPv6 ACL of the routed tier as NetrisApiClientImpl.getAclAddItem fills it for an
        // ingress rule whose source CIDR is IPv6: dst_prefix the tier's /64 (getIp6Cidr), TCP
        // with established 1, source ports 1-65535; listed, replaced (AclEditItem), deleted.
        String acl6name = vname + "-N11-ACL31";
        BigDecimal acl6Id = step("POST acl (IPv6: ::/0 -> " + tier6 + " tcp/80)", () -> aclApi.apiAclPost(new AclAddItem()
                .name(acl6name).action("permit").proto("tcp").srcPrefix("::/0").srcPortFrom(1).srcPortTo(65535)
                .dstPrefix(tier6).dstPortFrom(80).dstPortTo(80).comment("").reverse("no")
                .established(BigDecimal.ONE).vpc(new AclBodyVpc().id(vpcId))).getId());
        step("GET acl (the IPv6 rule listed back as sent)", () -> {
            for (AclGetBody g : aclApi.apiAclGet(null, null).getData())
                if (acl6name.equals(g.getName())) {
                    check("::/0".equals(g.getSrcPrefix()) && tier6.equals(g.getDstPrefix()),
                            "prefixes ::/0 -> " + tier6 + ", got " + g.getSrcPrefix() + " -> " + g.getDstPrefix());
                    check(g.getDstPortFrom().intValue() == 80, "dst_port_from 80, got " + g.getDstPortFrom());
                    return g.getId();
                }
            throw new IllegalStateException("IPv6 ACL not listed");
        });
        step("PUT acl (IPv6 rule replaced: tcp/8080)", () -> {
            aclApi.apiAclPut(new AclEditItem().id(acl6Id).name(acl6name).action("permit").proto("tcp")
                    .srcPrefix("::/0").srcPortFrom(1).srcPortTo(65535).dstPrefix(tier6).dstPortFrom(8080).dstPortTo(8080)
                    .comment("").reverse("no").established(BigDecimal.ONE)
                    .tenantsID(tenant.getId().toString()).vpc(new AclBodyVpc().id(vpcId)));
            for (AclGetBody g : aclApi.apiAclGet(null, null).getData())
                if (acl6name.equals(g.getName())) {
                    check(g.getDstPortFrom().intValue() == 8080, "dst_port_from 8080, got " + g.getDstPortFrom());
                    return 1;
                }
            throw new IllegalStateException("IPv6 ACL not listed after the PUT");
        });
        step("POST acl mixing families (0.0.0.0/0 -> " + tier6 + ") is refused", () -> {
            try {
                aclApi.apiAclPost(new AclAddItem().name(vname + "-N11-ACL32").action("permit").proto("tcp")
                        .srcPrefix("0.0.0.0/0").srcPortFrom(1).srcPortTo(65535).dstPrefix(tier6).dstPortFrom(22)
                        .dstPortTo(22).comment("").reverse("no").established(BigDecimal.ONE).vpc(new AclBodyVpc().id(vpcId)));
            } catch (io.netris.ApiException e) {
                check(e.getCode() == 400 && e.getResponseBody().contains("dst_prefix"), "400 naming dst_prefix, got " + e.getCode() + " " + e.getResponseBody());
                return 1;
            }
            throw new IllegalStateException("accepted");
        });
        step("DELETE acl (the IPv6 rule)", () -> {
            List<BigDecimal> ids = new ArrayList<>(); ids.add(acl6Id);
            aclApi.apiAclDelete(new AclDeleteItem().id(ids).tenantsID(tenant.getId().toString()));
            for (AclGetBody g : aclApi.apiAclGet(null, null).getData())
                check(!acl6name.equals(g.getName()), "IPv6 ACL still listed");
            return 1;
        });

        // An IPv6 load balancer (L4LbAddItem's ipFamily IPv6): a VIP of the zone's IPv6 range,
        // a backend in the routed tier; listed, deleted.
        String vip6 = zone6.substring(0, zone6.indexOf("::/")) + "::60";
        String be6 = tier6Gw.replaceAll("::1$", "::11");
        Integer lb6Id = step("POST l4lb (ipFamily IPv6: " + vip6 + " -> " + be6 + ")", () -> {
            L4LbAddItem b = new L4LbAddItem();
            b.setName(vname + "-LB8"); b.setProtocol("TCP"); b.setIp(vip6); b.setPort(80);
            b.setStatus("enable"); b.setAutomatic(false);
            b.setIpFamily(L4lbAddOrUpdateItem.IpFamilyEnum.IPv6);
            b.setHealthCheck(L4lbAddOrUpdateItem.HealthCheckEnum.NONE);
            L4LbVpc v = new L4LbVpc(); v.setId(vpcId); v.setName(vname); b.setVpc(v);
            L4LbTenant t = new L4LbTenant(); t.setId(tenant.getId().intValue()); t.setName("Admin"); b.setTenant(t);
            L4LBSite s = new L4LBSite(); s.setId(site.getId()); s.setName(site.getName()); b.setSite(s);
            List<L4LoadBalancerBackendItem> be = new ArrayList<>();
            L4LoadBalancerBackendItem x = new L4LoadBalancerBackendItem(); x.setIp(be6); x.setPort(80); be.add(x);
            b.setBackend(be);
            return lbApi.apiV2L4lbPost(b).getData();
        });
        step("GET l4lb (the IPv6 LB: VIP and backend)", () -> {
            for (L4LoadBalancerItem l : lbApi.apiV2L4lbGet(null, null).getData())
                if (l.getId().equals(lb6Id)) {
                    check(vip6.equals(l.getIp()), "ip " + vip6 + ", got " + l.getIp());
                    check(l.getBackendIps().size() == 1 && be6.equals(l.getBackendIps().get(0).getIp()),
                            "backend " + be6 + ", got " + l.getBackendIps());
                    return 1;
                }
            throw new IllegalStateException("IPv6 LB not listed");
        });
        step("DELETE l4lb (the IPv6 LB)", () -> lbApi.apiV2L4lbIdDelete(lb6Id).isIsSuccess());

        // SNAT, port forward, static NAT: public /32s, rules, list.
        for (String ip : new String[]{pub + ".40", pub + ".41", pub + ".42"}) {
            step("POST ipam/subnet nat " + ip, () -> ipam.apiV2IpamSubnetPost(new SubnetBody()
                    .name(ip + "/32").prefix(ip + "/32").tenant(ten).sites(siteList)
                    .purpose(SubnetBody.PurposeEnum.NAT)
                    .vpc(new AllocationBodyVpc().id(1).name("System VPC"))).getData().getId());
        }
        NatBodySiteSite ns = new NatBodySiteSite().id(site.getId()).name(site.getName());
        NatBodyVpcVpc nv = new NatBodyVpcVpc().id(vpcId).name(vname);
        step("POST nat SNAT", () -> natApi.apiV2NatPost(named(vname + "-SNAT").site(ns).vpc(nv)
                .state(NatPostBody.StateEnum.ENABLED).action(NatPostBody.ActionEnum.SNAT)
                .protocol(NatPostBody.ProtocolEnum.ALL).sourceAddress("10.40.0.0/16")
                .destinationAddress("0.0.0.0/0").snatToIP(pub + ".40/32")).getData().getId());
        step("POST nat DNAT (port forward)", () -> natApi.apiV2NatPost(named(vname + "-DNAT-R3").site(ns).vpc(nv)
                .state(NatPostBody.StateEnum.ENABLED).action(NatPostBody.ActionEnum.DNAT)
                .protocol(NatPostBody.ProtocolEnum.TCP).sourceAddress("0.0.0.0/0").sourcePort("1-65535")
                .destinationAddress(pub + ".41/32").destinationPort("8080")
                .dnatToIP("10.40.1.11/32").dnatToPort(80)).getData().getId());
        step("POST nat DNAT (static NAT)", () -> natApi.apiV2NatPost(named(vname + "-VM7-STATICNAT").site(ns).vpc(nv)
                .state(NatPostBody.StateEnum.ENABLED).action(NatPostBody.ActionEnum.DNAT)
                .protocol(NatPostBody.ProtocolEnum.ALL).sourceAddress("0.0.0.0/0")
                .destinationAddress(pub + ".42/32").dnatToIP("10.40.1.12/32")).getData().getId());
        step("POST ipam/subnet nat " + pub + ".43 (new SNAT IP)", () -> ipam.apiV2IpamSubnetPost(new SubnetBody()
                .name(pub + ".43/32").prefix(pub + ".43/32").tenant(ten).sites(siteList)
                .purpose(SubnetBody.PurposeEnum.NAT)
                .vpc(new AllocationBodyVpc().id(1).name("System VPC"))).getData().getId());
        step("PUT nat (SNAT IP change)", () -> {
            for (NatGetBody n : natApi.apiV2NatGet(null, null).getData())
                if ((vname + "-SNAT").equals(n.getName())) {
                    NatPutBody b = new NatPutBody();
                    b.setName(vname + "-SNAT");
                    b.site(ns).vpc(nv).state(NatPutBody.StateEnum.ENABLED).action(NatPutBody.ActionEnum.SNAT)
                            .protocol(NatPutBody.ProtocolEnum.ALL).sourceAddress("10.40.0.0/16")
                            .destinationAddress("0.0.0.0/0").snatToIP(pub + ".43/32");
                    natApi.apiV2NatIdPut(b, n.getId());
                    for (NatGetBody m : natApi.apiV2NatGet(null, null).getData())
                        if (m.getId().equals(n.getId())) return m.getName();
                }
            throw new IllegalStateException("SNAT rule not listed");
        });
        step("PUT vnet (tier rename)", () -> {
            VnetEditBody b = new VnetEditBody().name(vname + "-N9-tier1b").vpc(new VnetAddBodyVpc().id(vpcId).name(vname));
            b.setVxlanID(1600009);
            List<VnetEditBodyGateways> gws = new ArrayList<>();
            gws.add(new VnetEditBodyGateways().prefix("10.40.1.1/24").dhcpEnabled(false));
            b.setGateways(gws);
            vnetApi.apiV2VnetIdPut(b, vnetId);
            for (VnetsBody v : vnetApi.apiV2VnetGet(fs, fv).getData())
                if ((vname + "-N9-tier1b").equals(v.getName())) return 1;
            throw new IllegalStateException("renamed tier not listed");
        });
        step("GET nat (object action/protocol/state, integer dnatToPort)", () -> {
            for (NatGetBody n : natApi.apiV2NatGet(null, null).getData())
                if ((vname + "-DNAT-R3").equals(n.getName())) {
                    check(n.getDnatToPort() == 80, "dnatToPort 80");
                    check(n.getAction() != null && n.getAction().getValue() != null, "action object");
                    return n.getId();
                }
            throw new IllegalStateException("DNAT rule not listed");
        });

        // LB with backendIps, update, list.
        step("POST ipam/subnet load-balancer", () -> ipam.apiV2IpamSubnetPost(new SubnetBody()
                .name(pub + ".44/32").prefix(pub + ".44/32").tenant(ten).sites(siteList)
                .purpose(SubnetBody.PurposeEnum.LOAD_BALANCER)
                .vpc(new AllocationBodyVpc().id(1).name("System VPC"))).getData().getId());
        Integer lbId = step("POST l4lb (backendIps)", () -> {
            L4LbAddItem b = new L4LbAddItem();
            b.setName(vname + "-LB4"); b.setProtocol("TCP"); b.setIp(pub + ".44"); b.setPort(80);
            b.setStatus("enable"); b.setAutomatic(false);
            b.setHealthCheck(L4lbAddOrUpdateItem.HealthCheckEnum.NONE);
            L4LbVpc v = new L4LbVpc(); v.setId(vpcId); v.setName(vname); b.setVpc(v);
            L4LbTenant t = new L4LbTenant(); t.setId(tenant.getId().intValue()); t.setName("Admin"); b.setTenant(t);
            L4LBSite s = new L4LBSite(); s.setId(site.getId()); s.setName(site.getName()); b.setSite(s);
            List<L4LoadBalancerBackendItem> be = new ArrayList<>();
            L4LoadBalancerBackendItem x = new L4LoadBalancerBackendItem(); x.setIp("10.40.1.11"); x.setPort(80); be.add(x);
            b.setBackend(be); // serialized as `backendIps`
            return lbApi.apiV2L4lbPost(b).getData();
        });
        // LB source CIDRs: System-VPC ACLs, a deny-all LBACL0 and one permit per CIDR, dst = VIP/32.
        List<BigDecimal> lbAcls = new ArrayList<>();
        String[][] lbRules = {{"LBACL0", "deny", "0.0.0.0/0"}, {"LBACL1", "permit", "198.51.100.0/24"}};
        for (String[] r : lbRules) {
            BigDecimal id = step("POST acl " + r[0] + " (LB source CIDR, System VPC)", () -> aclApi.apiAclPost(new AclAddItem()
                    .name(vname + "-" + r[0] + "-4").action(r[1]).proto("tcp").srcPrefix(r[2])
                    .srcPortFrom(1).srcPortTo(65535).dstPrefix(pub + ".44/32").dstPortFrom(80).dstPortTo(80)
                    .comment("").reverse("yes").established(BigDecimal.ZERO).vpc(new AclBodyVpc().id(1))).getId());
            if (id != null) lbAcls.add(id);
        }
        step("PUT l4lb (two backends)", () -> {
            L4LbEditItem b = new L4LbEditItem();
            b.setName(vname + "-LB4"); b.setProtocol("TCP"); b.setIp(pub + ".44"); b.setPort(80);
            b.setStatus("enable"); b.setHealthCheck(L4lbAddOrUpdateItem.HealthCheckEnum.NONE);
            L4LbVpc v = new L4LbVpc(); v.setId(vpcId); v.setName(vname); b.setVpc(v);
            List<L4LoadBalancerBackendItem> be = new ArrayList<>();
            for (String ip : new String[]{"10.40.1.11", "10.40.1.12"}) {
                L4LoadBalancerBackendItem x = new L4LoadBalancerBackendItem(); x.setIp(ip); x.setPort(80); be.add(x);
            }
            b.setBackend(be); // serialized as `backendIps`
            lbApi.apiV2L4lbIdPut(b, lbId);
            return 1;
        });
        step("GET l4lb (backendIps changed)", () -> {
            for (L4LoadBalancerItem l : lbApi.apiV2L4lbGet(null, null).getData())
                if (l.getId().equals(lbId)) { check(l.getBackendIps().size() == 2, "2 backends, got " + l.getBackendIps().size()); return 2; }
            throw new IllegalStateException("LB not listed");
        });

        // ACL create, replace (PUT), list.
        BigDecimal aclId = step("POST acl", () -> {
            AclAddItem b = new AclAddItem().name(vname + "-N9-ACL1").action("permit").proto("tcp")
                    .srcPrefix("0.0.0.0/0").srcPortFrom(1).srcPortTo(65535).dstPrefix("10.40.1.0/24")
                    .dstPortFrom(22).dstPortTo(22).comment("").reverse("yes").established(BigDecimal.ZERO)
                    .vpc(new AclBodyVpc().id(vpcId));
            return aclApi.apiAclPost(b).getId();
        });
        step("PUT acl (replace)", () -> {
            AclEditItem b = new AclEditItem().id(aclId).name(vname + "-N9-ACL1").action("deny").proto("tcp")
                    .srcPrefix("0.0.0.0/0").srcPortFrom(1).srcPortTo(65535).dstPrefix("10.40.1.0/24")
                    .dstPortFrom(22).dstPortTo(22).comment("").reverse("yes").established(BigDecimal.ZERO)
                    .tenantsID(tenant.getId().toString()).vpc(new AclBodyVpc().id(vpcId));
            aclApi.apiAclPut(b);
            return 1;
        });
        step("GET acl", () -> aclApi.apiAclGet(null, null).getData().size());

        // Static routes: add, list filtered (name = prefix), update, delete.
        RoutesBodyVpcVpc rv = new RoutesBodyVpcVpc().id(vpcId).name(vname);
        for (String p : new String[]{"192.168.60.0/24", "192.168.61.0/24"}) {
            step("POST routes " + p, () -> {
                RoutesPostBody b = new RoutesPostBody().vpc(rv);
                b.setPrefix(p); b.setNextHop("10.40.1.11"); b.setDescription(prefix + "-V5");
                b.setSiteId(new BigDecimal(site.getId())); b.setStateStatus(RoutesBody.StateStatusEnum.ACTIVE);
                return routesApi.apiRoutesPost(b).getData().getId();
            });
        }
        List<RoutesGetBody> routes = step("GET routes ?filterBySites&filterByVpc (name = prefix)", () -> {
            List<RoutesGetBody> l = routesApi.apiRoutesGet(fs, fv).getData();
            check(l.size() == 2, "2 routes, got " + l.size());
            for (RoutesGetBody r : l) check(r.getName().equals(r.getPrefix()), "name == prefix");
            return l;
        });
        if (routes != null) {
            step("PUT routes", () -> {
                RoutesPutBody b = new RoutesPutBody().prefix(routes.get(0).getPrefix()).nextHop("10.40.1.12")
                        .description(prefix + "-V5").siteId(new BigDecimal(site.getId()))
                        .stateStatus(RoutesPutBody.StateStatusEnum.ACTIVE);
                b.id(routes.get(0).getId()); // serialized as `route_id`
                return routesApi.apiRoutesPut(b).isIsSuccess();
            });
            for (RoutesGetBody r : routes)
                step("DELETE routes " + r.getPrefix(), () -> routesApi.apiRoutesDelete(new RoutesBodyId().id(r.getId())).isIsSuccess());
        }

        // Tear down in CloudStack's order.
        step("DELETE acl LBACL* (LB source CIDRs)", () -> {
            aclApi.apiAclDelete(new AclDeleteItem().id(lbAcls).tenantsID(tenant.getId().toString())); return 1; });
        step("DELETE l4lb", () -> lbApi.apiV2L4lbIdDelete(lbId).isIsSuccess());
        step("DELETE acl", () -> { List<BigDecimal> ids = new ArrayList<>(); ids.add(aclId);
            aclApi.apiAclDelete(new AclDeleteItem().id(ids).tenantsID(tenant.getId().toString())); return 1; });
        step("release SNAT /32 (before its rule) and delete NAT rules", () -> {
            for (IpTreeSubnet s : ipam.apiV2IpamSubnetsGet(null).getData())
                if ((pub + ".43/32").equals(s.getPrefix())) ipam.apiV2IpamTypeIdDelete("subnet", s.getId().intValue());
            for (NatGetBody n : natApi.apiV2NatGet(null, null).getData())
                if (n.getVpc() != null && vpcId.equals(n.getVpc().getId())) natApi.apiV2NatIdDelete(n.getId());
            return 1;
        });
        step("release other public /32s", () -> {
            for (IpTreeSubnet s : ipam.apiV2IpamSubnetsGet(null).getData())
                if (s.getPrefix().startsWith(pub + ".") && s.getPrefix().endsWith("/32"))
                    ipam.apiV2IpamTypeIdDelete("subnet", s.getId().intValue());
            return 1;
        });
        step("deleteVnet (routed dual-stack tier): vnet, IPv4 and IPv6 subnets, the /64's allocation found by name", () -> {
            vnetApi.apiV2VnetIdDelete(vnet7Id);
            for (String n : new String[]{vname + "-10.40.3.0/24", vname + "-" + tier6}) {
                IpTreeSubnet sn = subnetNamed(ipam, fv, n);
                check(sn != null, "subnet " + n + " listed");
                ipam.apiV2IpamTypeIdDelete("subnet", sn.getId().intValue());
            }
            int n = 0;
            for (VPCResourceIpam al : vpcApi.apiV2VpcVpcIdResourcesGet(vpcId).getData().get(0).getAllocation())
                if (al.getName().equalsIgnoreCase(vname + "-" + tier6)) {
                    check(tier6Alloc.intValue() == al.getId(), "allocation id " + tier6Alloc + ", got " + al.getId());
                    ipam.apiV2IpamTypeIdDelete("allocation", al.getId());
                    n++;
                }
            check(n == 1, "one allocation named for the /64, got " + n);
            return 1;
        });
        step("DELETE vnet", () -> vnetApi.apiV2VnetIdDelete(vnetId).isIsSuccess());
        step("DELETE vnet (dual-stack tier)", () -> vnetApi.apiV2VnetIdDelete(vnet6Id).isIsSuccess());
        step("DELETE tier subnets", () -> {
            int n = 0;
            for (IpTreeSubnet s : ipam.apiV2IpamSubnetsGet(null).getData())
                if ((vname + "-N9-tier1").equals(s.getName()) || (vname + "-10.40.2.0/24").equals(s.getName())
                        || (vname + "-" + v6).equals(s.getName())) {
                    ipam.apiV2IpamTypeIdDelete("subnet", s.getId().intValue());
                    n++;
                }
            check(n == 3, "three tier subnets, got " + n);
            return 1;
        });
        step("GET vpc resources, delete allocations", () -> {
            List<VPCResource> r = vpcApi.apiV2VpcVpcIdResourcesGet(vpcId).getData();
            check(r.get(0).getAllocation().size() == 2, "two allocations (IPv4 and the tier's IPv6 /64), got " + r.get(0).getAllocation().size());
            for (VPCResourceIpam al : r.get(0).getAllocation()) ipam.apiV2IpamTypeIdDelete("allocation", al.getId());
            return 1;
        });
        step("DELETE vpc (data object)", () -> vpcApi.apiV2VpcVpcIdDelete(vpcId).getData());
        step("DELETE zone allocation", () -> {
            for (IpTreeAllocation al : ipam.apiV2IpamGet(null, null).getData())
                if (("Z1-" + pub + ".0/24").equals(al.getName())) ipam.apiV2IpamTypeIdDelete("allocation", al.getId().intValue());
            return 1;
        });
        step("DELETE the zone's IPv6 subnet and allocation", () -> {
            IpTreeSubnet sn = subnetOf(ipam, fvSys, zone6Id, zone6);
            check(sn != null, "the zone's IPv6 subnet is listed");
            ipam.apiV2IpamTypeIdDelete("subnet", sn.getId().intValue());
            ipam.apiV2IpamTypeIdDelete("allocation", zone6Id.intValue());
            check(enclosingAllocation(ipam, fs, fvSys, zone6) == null, "no allocation holds " + zone6 + " any more");
            return 1;
        });
        // An isolated network outside a VPC: its own controller VPC `...-N{net}-<name>`.
        String iname = prefix + "-N12-isonet";
        VPCCreate ic = new VPCCreate();
        ic.setName(iname);
        ic.setAdminTenant(at);
        Integer isoVpc = step("POST vpc (isolated network's controller VPC)", () -> vpcApi.apiV2VpcPost(ic).getData().getId());
        step("POST ipam/allocation (isolated network)", () -> ipam.apiV2IpamAllocationPost(new AllocationBody()
                .name(iname + "-10.50.0.0/24").prefix("10.50.0.0/24").tenant(ten)
                .vpc(new AllocationBodyVpc().id(isoVpc).name(iname))).getData().getId());
        Integer isoNet = step("POST vnet (isolated network)", () -> {
            VnetAddBody b = new VnetAddBody().name(iname).tenant(ten).sites(siteList)
                    .vpc(new VnetAddBodyVpc().id(isoVpc).name(iname));
            b.setVxlanID(1600012);
            List<VnetAddBodyGateways> gws = new ArrayList<>();
            gws.add(new VnetAddBodyGateways().prefix("10.50.0.1/24").dhcpEnabled(false));
            b.setGateways(gws);
            return vnetApi.apiV2VnetPost(b).getData().getId();
        });
        step("DELETE isolated network (vnet, allocation, VPC)", () -> {
            vnetApi.apiV2VnetIdDelete(isoNet);
            for (VPCResourceIpam al : vpcApi.apiV2VpcVpcIdResourcesGet(isoVpc).getData().get(0).getAllocation())
                ipam.apiV2IpamTypeIdDelete("allocation", al.getId());
            return vpcApi.apiV2VpcVpcIdDelete(isoVpc).getData();
        });
        System.out.println("RESULT passed=" + passed + " failed=" + failed);
        System.exit(failed == 0 ? 0 : 1);
    }
}
