//! The manual's FAQ 8: logins from the campus network need no one-time password.

use std::net::IpAddr;

use ipnet::IpNet;

/// The networks the university counts as on campus.
#[derive(Debug, Clone, Default)]
pub struct CampusNetworks(Vec<IpNet>);

impl CampusNetworks {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    /// The campus network containing `ip`, if any. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, as dual-stack proxies report them) count as their IPv4 form.
    pub fn containing(&self, ip: IpAddr) -> Option<&IpNet> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().find(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campus() -> CampusNetworks {
        CampusNetworks::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8:10::/48".parse().unwrap(),
        ])
    }

    #[test]
    fn on_campus_addresses_match_their_network() {
        let campus = campus();
        assert_eq!(
            campus
                .containing("10.1.2.3".parse().unwrap())
                .unwrap()
                .to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            campus
                .containing("2001:db8:10::5".parse().unwrap())
                .unwrap()
                .to_string(),
            "2001:db8:10::/48"
        );
        assert_eq!(
            campus
                .containing("::ffff:10.9.9.9".parse().unwrap())
                .unwrap()
                .to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn off_campus_addresses_match_nothing() {
        let campus = campus();
        for ip in ["11.0.0.1", "192.168.1.1", "2001:db8:11::1", "::1"] {
            assert!(campus.containing(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }
}
