"""ID-mapper resolvers: turn beneficiary ids into financial addresses."""
