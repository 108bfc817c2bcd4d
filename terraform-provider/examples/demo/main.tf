# A second tenant next to the lab's demo tenant: one VPC with an app tier, outbound SNAT, a port
# forward, a static route, an ACL list and a load balancer on a public VIP, plus the fleet's
# status and the VPC's gateways.
#
#   export SF_ENDPOINT=https://172.31.255.3:7443 SF_CA=/tmp/sf-lab.X/pki/ca.pem \
#          SF_TOKEN_FILE=/tmp/sf-lab.X/api-token
#   terraform apply   (with a dev_overrides CLI configuration for stackfabric/stackfabric)
terraform {
  required_providers {
    stackfabric = {
      source = "stackfabric/stackfabric"
    }
  }
}

# Connection settings left out here come from SF_ENDPOINT, SF_CA, SF_SERVER_NAME, SF_TOKEN and
# SF_TOKEN_FILE, as for sfctl.
provider "stackfabric" {}

variable "tenant" {
  type    = string
  default = "tfdemo"
}

variable "vpc_cidr" {
  type    = string
  default = "10.20.0.0/16"
}

variable "app_cidr" {
  type    = string
  default = "10.20.1.0/24"
}

# Public address of the SNAT rule and of the port forward; from the lab's "public" pool.
variable "snat_ip" {
  type    = string
  default = "203.0.113.40"
}

variable "forward_ip" {
  type    = string
  default = "203.0.113.41"
}

# Public VIP of the load balancer in front of the app tier's web servers.
variable "lb_vip" {
  type    = string
  default = "203.0.113.42"
}

variable "ssh_private_port" {
  type    = number
  default = 22
}

variable "acl_default_action" {
  type    = string
  default = "allow"
}

resource "stackfabric_tenant" "this" {
  name        = var.tenant
  description = "managed by terraform"
}

resource "stackfabric_vpc" "green" {
  tenant = stackfabric_tenant.this.name
  name   = "green"
  cidr   = var.vpc_cidr
}

resource "stackfabric_network" "app" {
  tenant = stackfabric_vpc.green.tenant
  vpc    = stackfabric_vpc.green.name
  name   = "app"
  cidr   = var.app_cidr
}

resource "stackfabric_nat_rule" "snat" {
  tenant    = stackfabric_vpc.green.tenant
  vpc       = stackfabric_vpc.green.name
  name      = "outbound"
  kind      = "snat"
  public_ip = var.snat_ip
}

resource "stackfabric_nat_rule" "ssh" {
  tenant       = stackfabric_vpc.green.tenant
  vpc          = stackfabric_vpc.green.name
  name         = "ssh"
  kind         = "port-forward"
  public_ip    = var.forward_ip
  protocol     = "tcp"
  public_port  = 2222
  private_ip   = "10.20.1.11"
  private_port = var.ssh_private_port
  depends_on   = [stackfabric_network.app]
}

resource "stackfabric_static_route" "onprem" {
  tenant  = stackfabric_vpc.green.tenant
  vpc     = stackfabric_vpc.green.name
  name    = "onprem"
  prefix  = "192.168.50.0/24"
  nexthop = "10.20.1.254"
  depends_on = [stackfabric_network.app]
}

resource "stackfabric_acl_list" "app" {
  tenant         = stackfabric_vpc.green.tenant
  vpc            = stackfabric_vpc.green.name
  name           = "app-acl"
  default_action = var.acl_default_action
  tiers          = [stackfabric_network.app.name]

  rule {
    number    = 10
    direction = "ingress"
    action    = "allow"
    protocol  = "icmp"
    cidrs     = [var.app_cidr]
  }

  rule {
    number     = 20
    direction  = "ingress"
    action     = "allow"
    protocol   = "tcp"
    port_start = 22
    port_end   = 22
    cidrs      = ["0.0.0.0/0"]
  }

  rule {
    number    = 30
    direction = "egress"
    action    = "allow"
    protocol  = "all"
    cidrs     = ["0.0.0.0/0"]
  }
}

# HTTP on the VIP, spread over two app servers, each checked by TCP every second.
resource "stackfabric_load_balancer" "web" {
  tenant      = stackfabric_vpc.green.tenant
  vpc         = stackfabric_vpc.green.name
  name        = "web"
  vip         = var.lb_vip
  port        = 80
  health_type = "tcp"
  interval_ms = 1000
  timeout_ms  = 500
  rise        = 2
  fall        = 2

  backend {
    ip   = "10.20.1.11"
    port = 80
  }

  backend {
    ip   = "10.20.1.12"
    port = 80
  }

  depends_on = [stackfabric_network.app]
}

data "stackfabric_gateway_placement" "this" {
  tenant     = stackfabric_vpc.green.tenant
  depends_on = [stackfabric_vpc.green]
}

data "stackfabric_fleet_status" "fleet" {}

output "app_vni" {
  value = stackfabric_network.app.vni
}

output "app_gateway" {
  value = stackfabric_network.app.gateway
}

output "primary_gateway" {
  value = stackfabric_vpc.green.primary_gateway
}

output "lb_vip" {
  value = stackfabric_load_balancer.web.vip
}

output "lb_gateway" {
  value = stackfabric_load_balancer.web.gateway
}

output "placements" {
  value = data.stackfabric_gateway_placement.this.placements
}

output "coordinator_leader" {
  value = data.stackfabric_fleet_status.fleet.leader
}
